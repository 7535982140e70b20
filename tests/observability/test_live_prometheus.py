"""Proof against a real Prometheus.

Starts the service (``humwatch serve --workers 2``: two processes behind one ``/metrics``, on a
temporary SQLite database with an API key) and a real Prometheus on loopback (free ports, a
temporary data directory, 1 s scrape and evaluation, the rules of ``dashboards/prometheus``
with every ``for`` and range divided by ``SPEEDUP``). Two simulated machines stream audio in
real time; one develops a bearing fault part way. Then, through Prometheus' HTTP API:

- the scrape is healthy and every rule evaluates without error;
- every PromQL expression of the dashboards and of the recording rules returns data, and
  every alert expression (comparisons made ``bool``) returns data;
- the faulty machine's anomaly alert is firing and the healthy machine has no alert;
- the counters Prometheus scraped equal what the API returned, although two worker
  processes served the uploads.

Fails (never skips) when the ``prometheus`` binary is missing: ``apt-get install prometheus``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from detectors.simulate import Fault, MachineSimulator
from tests.observability.promql import (
    ROOT,
    accelerate_rules,
    binary,
    boolify,
    dashboard_expressions,
    load_rule_groups,
    substitute_grafana,
)
from tests.service.audio import to_bytes
from tests.service.conftest import free_port

SPEEDUP = 30  # 5m -> 10s: a `for: 5m` alert fires after 10 s of its condition
MIN_RANGE_SECONDS = 5  # at least five 1 s scrapes in every range
RATE_INTERVAL = "10s"  # $__rate_interval of the dashboards
API_KEY = "live-test-api-key-0123456789"
METRICS_TOKEN = "live-test-metrics-token-0123456789"
ADMIN_TOKEN = "live-test-admin-token-0123456789"
HEALTHY, FAULTY = "pump-ok", "fan-bad"
# Seeds whose healthy sound stays well under the threshold (median ratio <= 0.96 over any
# 10 s of 60 s on this embedder), so only the fault can raise an alert.
MACHINES = {HEALTHY: ("pump", 2), FAULTY: ("fan", 2)}
ENROLL_SECONDS = 20
HEALTHY_SECONDS = 12  # monitoring before the fault
FIRING_DEADLINE = 75  # seconds from the fault to the alert firing, at most
ALERT = "HumwatchMachineAnomaly"


def wait_until(check: Callable[[], bool], timeout: float, what: str, processes=()) -> None:
    """Poll ``check`` until true; fail with the processes' logs on timeout or on an exit."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        exited = [p for p in processes if p.proc.poll() is not None]
        if exited:
            _fail(f"{exited[0].log.stem} exited ({exited[0].proc.returncode})", processes)
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    _fail(f"timed out after {timeout:.0f} s waiting for {what}", processes)


def _fail(message: str, processes) -> None:
    tails = "\n".join(f"--- {p.log.name}:\n{p.log.read_text()[-3000:]}" for p in processes)
    pytest.fail(f"{message}\n{tails}", pytrace=False)


class Process:
    """A child process in its own session, logged to a file, stopped with its children."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._file = log.open("w")
        self.proc = subprocess.Popen(
            args,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._file.close()


@dataclass
class Stream:
    """Streams one 1 s chunk per machine per second until stopped; injects the fault."""

    client: httpx.Client
    sims: dict[str, MachineSimulator]
    fault: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    scored: int = 0
    outliers: dict[str, list[bool]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def send(self, machine: str) -> dict:
        resp = self.client.post(
            f"/v1/machines/{machine}/recordings",
            content=to_bytes(self.sims[machine].next_chunk(1.0)),
            headers={"Content-Type": "audio/wav"},
        )
        if resp.status_code != 201:
            self.errors.append(f"{machine}: {resp.status_code} {resp.text[:200]}")
            return {}
        body = resp.json()
        windows = [w for w in body["windows"] if w["score"] is not None]
        self.scored += len(windows)
        self.outliers.setdefault(machine, []).extend(w["is_outlier"] for w in windows)
        return body

    def send_batch(self, machine: str) -> dict:
        """The same as ``send`` through the batch upload (one item), so its route has series."""
        started = datetime.now(UTC) - timedelta(seconds=1)
        manifest = {
            "items": [{"machine_id": machine, "started_at": started.isoformat(), "file": "a"}]
        }
        resp = self.client.post(
            "/v1/recordings/batch",
            files={
                "manifest": ("m.json", json.dumps(manifest), "application/json"),
                "a": ("a.wav", to_bytes(self.sims[machine].next_chunk(1.0)), "audio/wav"),
            },
        )
        item = resp.json()["items"][0] if resp.status_code == 200 else {}
        if item.get("status") != 201:
            self.errors.append(f"{machine} (batch): {resp.status_code} {resp.text[:200]}")
            return {}
        windows = [w for w in item["result"]["windows"] if w["score"] is not None]
        self.scored += len(windows)
        self.outliers.setdefault(machine, []).extend(w["is_outlier"] for w in windows)
        return item["result"]

    def run(self) -> None:
        tick = time.monotonic()
        while not self.stop.is_set():
            if self.fault.is_set() and self.sims[FAULTY].fault is None:
                self.sims[FAULTY].fault = Fault("bearing", 1.0)
            for machine in self.sims:
                # The healthy machine's chunks come through the batch upload.
                (self.send_batch if machine == HEALTHY else self.send)(machine)
            tick += 1.0
            self.stop.wait(max(tick - time.monotonic(), 0.0))


@pytest.fixture
def live(tmp_path: Path) -> Iterator[dict]:
    prometheus_bin = binary("prometheus")
    api_port, prom_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HUMWATCH_DATABASE_URL": f"sqlite:///{tmp_path / 'humwatch.db'}",
        "HUMWATCH_API_KEYS": API_KEY,
        "HUMWATCH_ADMIN_TOKEN": ADMIN_TOKEN,
        # Prometheus scrapes with the metrics token, as dashboards/prometheus/prometheus.yml
        # shows: the alerts below only fire if that works.
        "HUMWATCH_METRICS_TOKEN": METRICS_TOKEN,
        "HUMWATCH_MIN_ENROLLMENT_SECONDS": str(ENROLL_SECONDS),
        "HUMWATCH_WARM_UP_INDEX": "false",
        "HUMWATCH_PRUNE_INTERVAL_SECONDS": "0",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc"),
        "NUMBA_CACHE_DIR": str(tmp_path / "numba"),
    }
    service = Process(
        [
            sys.executable,
            "-m",
            "service.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(api_port),
            "--workers",
            "2",
        ],
        tmp_path / "service.log",
        env,
    )

    rules = tmp_path / "rules.yml"
    groups = accelerate_rules(load_rule_groups(), SPEEDUP, MIN_RANGE_SECONDS)
    rules.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": "1s",
                    "scrape_timeout": "1s",
                    "evaluation_interval": "1s",
                },
                "rule_files": [str(rules)],
                "scrape_configs": [
                    {
                        "job_name": "humwatch",
                        "authorization": {"type": "Bearer", "credentials": METRICS_TOKEN},
                        "static_configs": [{"targets": [f"127.0.0.1:{api_port}"]}],
                    }
                ],
            }
        )
    )
    prometheus = Process(
        [
            prometheus_bin,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ],
        tmp_path / "prometheus.log",
    )
    processes = (service, prometheus)
    api = httpx.Client(
        base_url=f"http://127.0.0.1:{api_port}",
        # A new connection per request, so the kernel spreads them over both workers.
        headers={"Authorization": f"Bearer {API_KEY}", "Connection": "close"},
        timeout=30,
    )
    prom = httpx.Client(base_url=f"http://127.0.0.1:{prom_port}", timeout=30)
    try:
        wait_until(lambda: api.get("/readyz").status_code == 200, 90, "the service", processes)
        wait_until(lambda: prom.get("/-/ready").status_code == 200, 60, "Prometheus", processes)
        yield {"api": api, "prom": prom, "rules": groups, "tmp": tmp_path, "processes": processes}
    finally:
        api.close()
        prom.close()
        prometheus.stop()
        service.stop()


def query(prom: httpx.Client, expr: str) -> list[dict]:
    resp = prom.get("/api/v1/query", params={"query": expr})
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
    return body["data"]["result"]


def alerts(prom: httpx.Client) -> list[dict]:
    return prom.get("/api/v1/alerts").json()["data"]["alerts"]


def test_dashboards_and_alerts_against_a_real_prometheus(live):
    api, prom = live["api"], live["prom"]
    timings = {"start": time.monotonic()}

    # Two machines; short windows keep the test fast. Enroll them as fast as they take it.
    sims = {m: MachineSimulator(kind, seed=seed) for m, (kind, seed) in MACHINES.items()}
    stream = Stream(api, sims)
    for machine, (kind, _) in MACHINES.items():
        resp = api.post(
            "/v1/machines",
            json={
                "id": machine,
                "site": "north",
                "machine_type": kind,
                "window_seconds": 0.5,
                "hop_seconds": 0.25,
                # One continuous stream is one run: this test is about what Prometheus sees.
                "enrollment_runs": 1,
                "learning_days": 0,
            },
        )
        assert resp.status_code == 201, resp.text
        for _ in range(200):
            if stream.send(machine).get("machine_state") != "enrolling":
                break
        else:
            raise AssertionError(f"{machine} still enrolling after 200 uploads")
        assert not stream.errors, stream.errors
    # A few refused uploads, so the rejection panels have series.
    assert api.post("/v1/machines/no-such-machine/recordings", content=b"x").status_code == 415
    assert (
        api.post(
            f"/v1/machines/{HEALTHY}/recordings",
            content=b"RIFF....WAVEfmt garbage",
            headers={"Content-Type": "audio/wav"},
        ).status_code
        == 422
    )
    timings["enrolled"] = time.monotonic()

    thread = threading.Thread(target=stream.run, name="live-audio", daemon=True)
    thread.start()
    try:
        time.sleep(HEALTHY_SECONDS)
        stream.fault.set()
        timings["fault"] = time.monotonic()

        def firing() -> bool:
            return any(
                a["labels"].get("alertname") == ALERT
                and a["labels"].get("machine") == FAULTY
                and a["state"] == "firing"
                for a in alerts(prom)
            )

        wait_until(firing, FIRING_DEADLINE, f"{ALERT} to fire for {FAULTY}", live["processes"])
        timings["firing"] = time.monotonic()
        assert not stream.errors, stream.errors

        # The faulty machine's anomaly alert fires; the healthy machine has no alert at all.
        current = alerts(prom)
        assert {
            (a["labels"]["alertname"], a["state"])
            for a in current
            if a["labels"].get("machine") == FAULTY
        } >= {(ALERT, "firing")}
        assert [a for a in current if a["labels"].get("machine") == HEALTHY] == []
        anomaly = next(a for a in current if a["labels"]["alertname"] == ALERT)
        assert anomaly["labels"]["severity"] == "warning" and anomaly["labels"]["site"] == "north"
        assert anomaly["annotations"]["runbook_url"].endswith("runbook.md#humwatchmachineanomaly")

        _check_scrape_and_rules(prom, live["rules"])
        _check_every_expression(prom, live["rules"])
        timings["checked"] = time.monotonic()
    finally:
        stream.stop.set()
        thread.join(timeout=30)

    # Two workers served the uploads; Prometheus still sees every window the API scored.
    pids = {
        re.search(r"_(\d+)\.db$", p.name).group(1)
        for p in (live["tmp"] / "multiproc").glob("counter_*.db")
    }
    assert len(pids) >= 2, f"uploads went to one worker only ({pids}); cannot test aggregation"

    def scraped_all() -> bool:
        result = query(prom, 'sum(humwatch_windows_scored_total{job="humwatch"})')
        return bool(result) and float(result[0]["value"][1]) == stream.scored

    wait_until(
        scraped_all,
        10,
        f"sum(humwatch_windows_scored_total) == {stream.scored}",
        live["processes"],
    )
    healthy = stream.outliers[HEALTHY]
    print(
        f"live test: enrolled in {timings['enrolled'] - timings['start']:.1f} s, alert fired "
        f"{timings['firing'] - timings['fault']:.1f} s after the fault, checks took "
        f"{timings['checked'] - timings['firing']:.1f} s; {stream.scored} windows scored, "
        f"healthy outliers {sum(healthy)}/{len(healthy)}"
    )


def _check_scrape_and_rules(prom: httpx.Client, groups: list[dict]) -> None:
    (target,) = prom.get("/api/v1/targets").json()["data"]["activeTargets"]
    assert target["health"] == "up" and not target["lastError"], target
    loaded = prom.get("/api/v1/rules").json()["data"]["groups"]
    rules = [r for g in loaded for r in g["rules"]]
    assert len(rules) == sum(len(g["rules"]) for g in groups)
    broken = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert broken == [], broken


def _check_every_expression(prom: httpx.Client, groups: list[dict]) -> None:
    variables = {"site": ".*", "machine": FAULTY, "job": "humwatch"}
    variables["__rate_interval"] = RATE_INTERVAL
    empty = []
    for expression in dashboard_expressions():
        if expression.kind == "variable":  # label_values(metric, label): the metric's labels
            metric, label = re.fullmatch(
                r"label_values\((\w+),\s*(\w+)\)", expression.expr
            ).groups()
            resp = prom.get("/api/v1/series", params={"match[]": metric}).json()
            if not any(label in s for s in resp["data"]):
                empty.append(expression.source)
            continue
        expr = substitute_grafana(expression.expr, variables)
        if expression.kind == "annotation":  # regions while an event is open: its series, 0 or 1
            expr = boolify(expr)
        if not query(prom, expr):
            empty.append(f"{expression.source}: {expr}")
    for group in groups:
        for rule in group["rules"]:
            if "record" in rule:
                for expr in (rule["expr"], rule["record"]):
                    if not query(prom, expr):
                        empty.append(f"record {rule['record']}: {expr}")
            elif "absent(" in rule["expr"]:
                # absent() answers only when the target is gone: here it must be empty.
                assert query(prom, rule["expr"]) == [], rule["alert"]
            elif not query(prom, boolify(rule["expr"])):
                empty.append(f"alert {rule['alert']}: {boolify(rule['expr'])}")
    assert empty == [], "expressions without data:\n" + "\n".join(empty)
