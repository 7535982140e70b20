"""Real brokers and databases for the stream tests, on loopback.

The shared Mosquitto (127.0.0.1:1883) and NATS JetStream (127.0.0.1:4222) are used with
names unique to each test. Tests that restart a broker or a database start their OWN
``mosquitto`` / ``nats-server`` / Postgres on a free port in a temporary directory and
never touch the shared ones. ``ensure_binary`` installs a missing Debian package (as root,
as .ci/run does) instead of skipping.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from service.stream.topics import Names
from tests.service.conftest import free_port

SHARED_MQTT = "mqtt://127.0.0.1:1883"
SHARED_NATS = "nats://127.0.0.1:4222"
ROOT = Path(__file__).resolve().parents[2]


def ensure_binary(name: str, package: str) -> str:
    """The path of ``name``; ``apt-get install package`` first when it is missing."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/lib/postgresql")
    if found:
        return found
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", package], check=True, env=env)
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin")
    assert found, f"{name} still missing after installing {package}"
    return found


def unique_names() -> Names:
    tag = uuid.uuid4().hex[:10]
    return Names(
        mqtt_prefix=f"hwtest-{tag}",
        nats_prefix=f"hwtest-{tag}",
        stream=f"HWTEST_{tag}",
        dead_stream=f"HWTEST_DEAD_{tag}",
        consumer=f"hwtest-{tag}",
    )


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Mosquitto:
    """A private mosquitto with persistence, restartable on the same port."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.binary = ensure_binary("mosquitto", "mosquitto")
        self.directory = directory
        self.port = port or free_port()
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "mosquitto.conf"
        # Started as root, mosquitto switches to the user "mosquitto", which cannot write the
        # persistence file into this directory: it would silently lose the queued messages
        # across the restart. Keep the user that runs the tests.
        user = pwd.getpwuid(os.geteuid()).pw_name
        self.config.write_text(
            f"user {user}\n"
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {directory}/\n"
            "autosave_interval 1\n"
            "max_queued_messages 10000\n"
            "log_dest none\n"
        )
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.config)])
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # saves its persistence file
            self.proc.wait(10)
        self.proc = None


class NatsServer:
    """A private nats-server with JetStream in a temporary directory."""

    def __init__(self, directory: Path) -> None:
        self.binary = ensure_binary("nats-server", "nats-server")
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-js",
                "-sd",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def worker_process(
    db_url: str, nats_url: str, names: Names, *, ack_wait: float = 30.0, extra_env=None
) -> subprocess.Popen:
    """``humwatch worker`` in its own process (as in production)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HUMWATCH_DATABASE_URL": db_url,
        "HUMWATCH_MIN_ENROLLMENT_SECONDS": "6",
        "HUMWATCH_WARM_UP_INDEX": "false",
        "HUMWATCH_PRUNE_INTERVAL_SECONDS": "0",
        **(extra_env or {}),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "worker",
            "--nats",
            nats_url,
            "--subject-prefix",
            names.nats_prefix,
            "--stream",
            names.stream,
            "--dead-stream",
            names.dead_stream,
            "--consumer",
            names.consumer,
            "--ack-wait",
            str(ack_wait),
        ],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> tuple[str, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return out, err


async def delete_streams(nats_url: str, names: Names) -> None:
    import nats

    from service.stream import jetstream

    nc = await nats.connect(nats_url)
    try:
        await jetstream.delete_streams(nc.jetstream(), names)
    finally:
        await nc.close()


@contextlib.contextmanager
def running_thread_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An asyncio loop in a background thread (for the bridge in the test process)."""
    import threading

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
