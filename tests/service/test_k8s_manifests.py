"""deploy/k8s: the Kubernetes example parses and agrees with the code it deploys.

Every document is a well-formed object; every container runs the one humwatch image at this
version with a command the CLI has; every HUMWATCH_* variable is a setting of
``service.config.Settings``; config maps and secrets referenced exist; the API and the
workers are probed on /healthz (liveness) and /readyz (readiness) on a port they declare;
services select pods that exist and target ports they open.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from service import __version__
from service.cli import app
from service.config import Settings

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
IMAGE = f"ghcr.io/humwatch/humwatch:{__version__}"
SETTINGS = {f"HUMWATCH_{name.upper()}" for name in Settings.model_fields}


def documents() -> list[dict]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                doc["_file"] = path.name
                docs.append(doc)
    return docs


DOCS = documents()


def pod_spec(doc: dict) -> dict | None:
    if doc["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return doc["spec"]["template"]["spec"]
    return None


def containers() -> list[tuple[dict, dict]]:
    return [(doc, c) for doc in DOCS if pod_spec(doc) for c in pod_spec(doc)["containers"]]


def cli_commands() -> set[str]:
    import typer.main

    group = typer.main.get_command(app)
    return set(group.commands)


def test_every_document_is_a_named_kubernetes_object():
    assert {d["_file"] for d in DOCS} >= {
        "config.yaml",
        "migrate-job.yaml",
        "service.yaml",
        "workers.yaml",
        "bridge.yaml",
        "agent.yaml",
    }
    for doc in DOCS:
        assert doc.get("apiVersion") and doc.get("kind"), doc["_file"]
        assert doc["metadata"]["name"], doc["_file"]


def test_containers_run_this_image_and_real_commands():
    commands = cli_commands()
    assert {"serve", "worker", "bridge", "agent", "db"} <= commands
    seen = set()
    for doc, container in containers():
        assert container["image"] == IMAGE, (doc["_file"], container["image"])
        command = container["args"][0]
        assert command in commands, (doc["_file"], command)
        seen.add(command)
    assert seen == {"serve", "worker", "bridge", "agent", "db"}


def test_environment_names_are_settings():
    names: set[str] = set()
    refs: set[str] = set()
    for doc in DOCS:
        if doc["kind"] in ("ConfigMap",):
            names |= set(doc["data"])
        if doc["kind"] == "Secret":
            names |= set(doc.get("stringData", {})) | set(doc.get("data", {}))
    for _doc, container in containers():
        names |= {e["name"] for e in container.get("env", [])}
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef") or source.get("secretRef")
            refs.add(ref["name"])
    humwatch = {n for n in names if n.startswith("HUMWATCH_")}
    assert humwatch, "no settings configured"
    assert humwatch <= SETTINGS, f"not settings: {sorted(humwatch - SETTINGS)}"
    defined = {d["metadata"]["name"] for d in DOCS if d["kind"] in ("ConfigMap", "Secret")}
    assert refs <= defined, f"undefined: {sorted(refs - defined)}"
    # The values parse as the settings they configure (as the pods would read them).
    config = next(d for d in DOCS if d["kind"] == "ConfigMap")["data"]
    secret = next(d for d in DOCS if d["kind"] == "Secret")["stringData"]
    Settings(**{k.removeprefix("HUMWATCH_").lower(): v for k, v in {**config, **secret}.items()})


@pytest.mark.parametrize("name", ["humwatch-api", "humwatch-worker"])
def test_api_and_workers_are_probed_on_healthz_and_readyz(name):
    doc = next(d for d in DOCS if d["kind"] == "Deployment" and d["metadata"]["name"] == name)
    (container,) = pod_spec(doc)["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    live, ready = container["livenessProbe"]["httpGet"], container["readinessProbe"]["httpGet"]
    assert (live["path"], ready["path"]) == ("/healthz", "/readyz")
    for probe in (live, ready):
        assert probe["port"] in ports or probe["port"] in ports.values()
    if name == "humwatch-worker":
        args = container["args"]
        assert int(args[args.index("--metrics-port") + 1]) in ports.values()


def test_services_select_deployments_and_target_their_ports():
    for svc in (d for d in DOCS if d["kind"] == "Service"):
        selector = svc["spec"]["selector"]
        targets = [
            d
            for d in DOCS
            if pod_spec(d)
            and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert targets, f"service {svc['metadata']['name']} selects no pods"
        opened = {
            p["containerPort"]
            for d in targets
            for c in pod_spec(d)["containers"]
            for p in c.get("ports", [])
        }
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in opened


def test_deployments_select_their_own_pods_and_the_bridge_is_single():
    for doc in DOCS:
        if doc["kind"] == "Deployment":
            match = doc["spec"]["selector"]["matchLabels"]
            assert match.items() <= doc["spec"]["template"]["metadata"]["labels"].items()
    bridge = next(d for d in DOCS if d["metadata"]["name"] == "humwatch-bridge")
    assert bridge["spec"]["replicas"] == 1 and bridge["spec"]["strategy"]["type"] == "Recreate"
