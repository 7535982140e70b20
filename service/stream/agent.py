"""``humwatch agent``: audio from a sound card or files, in chunks, to MQTT; nothing lost.

Runs next to the microphones. The audio (a sound card through the optional ``sounddevice``
package, or files and directories replayed back to back, dated from ``--start``) is mixed
down (or one channel picked), resampled to the model's rate (16 kHz), cut into chunks
(default 10 s) and encoded as 16-bit mono FLAC (150-350 kB per 10 s, far below the 1 MB that
brokers are tuned for; the service stores it as it comes, without re-encoding). Each chunk is
published with QoS 1 to ``humwatch/{site}/{machine}/audio`` (``service.stream.topics``) in a
chunk message (``service.stream.envelope``: machine, site, start time, conditions).

Store and forward: every chunk is first written to the disk buffer (``--buffer-dir``) and
deleted only when the broker acknowledged it (PUBACK), so neither a broker restart nor an
agent restart loses a chunk. While the broker is unreachable the buffer grows up to
``--buffer-mb``; beyond that the oldest chunks not yet handed to the broker are dropped and
counted (``dropped`` in the summary and ``state.json``). When the broker returns the buffer
is drained oldest first, at most ``MAX_INFLIGHT`` chunks unacknowledged at a time. A chunk
whose PUBACK does not come ``ack_timeout`` seconds after (re)connecting is published again (a
duplicate is harmless: the bridge, JetStream and the service all deduplicate it).

Replays (``--pace 0``, the default) read the files only as fast as the broker takes the
chunks, so a replay never drops anything; ``--pace 1`` replays at real time like a live
microphone (and, like one, buffers and eventually drops while the broker is away).
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from service.stream import envelope
from service.stream.mqtt import MqttUrl, make_client
from service.stream.topics import Names

log = logging.getLogger("humwatch.agent")

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
MAX_INFLIGHT = 20
DEFAULT_RATE = 16000


class AgentError(RuntimeError):
    """A problem the user must fix (bad input files, no audio backend); one line."""


@dataclass
class AgentOptions:
    mqtt_url: str
    machine: str
    site: str | None = None
    names: Names = field(default_factory=Names)
    chunk_seconds: float = 10.0
    sample_rate: int = DEFAULT_RATE
    channel: str = "mix"
    conditions: dict[str, Any] = field(default_factory=dict)
    buffer_dir: Path | None = None
    buffer_bytes: int = 512 * 1024 * 1024
    pace: float = 0.0  # 0: as fast as the broker acks; 1: real time
    min_tail_seconds: float = 5.0
    ack_timeout: float = 15.0
    drain_timeout: float | None = None  # give up waiting for acks after this (files mode)
    client_id: str | None = None


# -- audio sources ---------------------------------------------------------------------------


def audio_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files named, and audio files under directories named, in name order."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES))
        elif path.is_file():
            out.append(path)
        else:
            raise AgentError(f"{path}: no such file or directory")
    if not out:
        raise AgentError(
            "no audio files (.wav, .flac, .ogg) found in " + ", ".join(map(str, paths))
        )
    return out


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """``(n,)`` float in [-1, 1] -> int16, the inverse of the decoder's x / 32768."""
    return np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16)


def _mono_at_rate(path: Path, channel: str, rate: int) -> np.ndarray:
    from detectors.audio import decode, resample
    from detectors.errors import DetectorError

    try:
        decoded = decode(path)
        spec: Any = "mix" if channel == "mix" else int(channel)
        if decoded.sample_rate == rate and (decoded.channels == 1 or spec != "mix"):
            pcm = decoded.pcm[:, 0 if decoded.channels == 1 else spec]
            if pcm.dtype == np.int16:
                return pcm.copy()  # exact: no float round trip
        return to_pcm16(resample(decoded.mono(spec), decoded.sample_rate, rate))
    except DetectorError as exc:
        raise AgentError(f"{path}: {exc}") from exc
    except IndexError as exc:
        raise AgentError(f"{path}: has no channel {channel}") from exc


def file_chunks(
    files: list[Path], options: AgentOptions, start: datetime
) -> Iterator[tuple[datetime, np.ndarray]]:
    """The files as one continuous recording from ``start``: ``(started_at, (n,) int16)``
    chunks of ``chunk_seconds``; a last piece shorter than ``min_tail_seconds`` is dropped."""
    rate = options.sample_rate
    size = int(round(options.chunk_seconds * rate))
    pending: list[np.ndarray] = []
    pending_samples = 0
    emitted = 0
    for path in files:
        pcm = _mono_at_rate(path, options.channel, rate)
        pending.append(pcm)
        pending_samples += pcm.size
        if pending_samples < size:
            continue
        stream = np.concatenate(pending)
        cut = (stream.size // size) * size
        for offset in range(0, cut, size):
            yield start + timedelta(seconds=emitted * size / rate), stream[offset : offset + size]
            emitted += 1
        pending, pending_samples = [stream[cut:]], stream.size - cut
    if pending_samples >= options.min_tail_seconds * rate:
        tail = np.concatenate(pending)
        yield start + timedelta(seconds=emitted * size / rate), tail
    elif pending_samples:
        log.info("last %.2f s are shorter than --min-tail; not sent", pending_samples / rate)


def device_chunks(device: str, options: AgentOptions) -> Iterator[tuple[datetime, np.ndarray]]:
    """Chunks from a sound card (``sounddevice``), dated by the wall clock at stream start;
    ``AgentError`` at once when there is no audio backend."""
    try:
        import sounddevice
    except (ImportError, OSError) as exc:
        raise AgentError(
            "no audio backend for --device: install the optional 'sounddevice' package "
            "(pip install sounddevice) and PortAudio (apt-get install libportaudio2), or replay "
            f"files instead ({exc})"
        ) from exc
    return _device_chunks(sounddevice, device, options)


def _device_chunks(sounddevice, device: str, options: AgentOptions):
    rate = options.sample_rate
    size = int(round(options.chunk_seconds * rate))
    blocks: queue.Queue[np.ndarray] = queue.Queue()

    def callback(indata, _frames, _time, status) -> None:
        if status:
            log.warning("sound card: %s", status)
        blocks.put(indata.copy())

    try:
        stream = sounddevice.InputStream(
            device=device, samplerate=rate, channels=None, dtype="int16", callback=callback
        )
    except Exception as exc:  # noqa: BLE001 - PortAudio's own message says what is wrong
        raise AgentError(f"cannot open sound card {device!r}: {exc}") from exc
    with stream:
        start = datetime.now(UTC) - timedelta(seconds=float(stream.latency or 0.0))
        buffered: list[np.ndarray] = []
        have = sent = 0
        while True:
            block = blocks.get()
            if block.shape[1] == 1:
                mono = block[:, 0]
            elif options.channel == "mix":
                from detectors.audio import to_mono

                mono = to_pcm16(to_mono(block, "mix"))
            elif int(options.channel) < block.shape[1]:
                mono = block[:, int(options.channel)]
            else:
                raise AgentError(f"sound card {device!r} has no channel {options.channel}")
            buffered.append(mono.astype(np.int16, copy=False))
            have += mono.size
            while have >= size:
                joined = np.concatenate(buffered)
                yield start + timedelta(seconds=sent * size / rate), joined[:size]
                sent += 1
                buffered, have = [joined[size:]], joined.size - size


def encode_flac(pcm: np.ndarray, rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, pcm, rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


# -- the disk buffer -------------------------------------------------------------------------


class Spool:
    """Chunk messages on disk until acknowledged: ``{seq:012d}.hwc`` files, oldest first,
    at most ``max_bytes`` (the oldest not in flight are dropped first and counted)."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        for tmp in directory.glob("*.tmp"):
            tmp.unlink()
        self.files: dict[int, int] = {
            int(p.stem): p.stat().st_size for p in directory.glob("*.hwc") if p.stem.isdigit()
        }
        state = self._read_state()
        self.next_seq = max([state.get("next_seq", 0), *(s + 1 for s in self.files)])
        self.dropped = int(state.get("dropped", 0))

    def _read_state(self) -> dict[str, Any]:
        try:
            return json.loads((self.directory / "state.json").read_text())
        except (OSError, ValueError):
            return {}

    def _write_state(self) -> None:
        tmp = self.directory / "state.json.tmp"
        tmp.write_text(json.dumps({"next_seq": self.next_seq, "dropped": self.dropped}))
        os.replace(tmp, self.directory / "state.json")

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())

    def __len__(self) -> int:
        return len(self.files)

    def path(self, seq: int) -> Path:
        return self.directory / f"{seq:012d}.hwc"

    def take_seq(self) -> int:
        seq = self.next_seq
        self.next_seq += 1
        return seq

    def add(self, seq: int, payload: bytes, in_flight: set[int]) -> list[int]:
        """Store a chunk; the sequence numbers dropped to make room."""
        dropped = []
        for old in sorted(self.files):
            if self.total_bytes + len(payload) <= self.max_bytes:
                break
            if old not in in_flight:
                self.remove(old)
                dropped.append(old)
        self.dropped += len(dropped)
        tmp = self.directory / f"{seq:012d}.tmp"
        with open(tmp, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path(seq))
        self.files[seq] = len(payload)
        self._write_state()
        if dropped:
            log.warning(
                "disk buffer full (%d MB): dropped %d oldest chunk(s), %d in all",
                self.max_bytes // 2**20,
                len(dropped),
                self.dropped,
            )
        return dropped

    def read(self, seq: int) -> bytes:
        return self.path(seq).read_bytes()

    def remove(self, seq: int) -> None:
        self.files.pop(seq, None)
        self.path(seq).unlink(missing_ok=True)

    def oldest(self, exclude: set[int]) -> int | None:
        for seq in sorted(self.files):
            if seq not in exclude:
                return seq
        return None


# -- the agent ---------------------------------------------------------------------------------


def default_buffer_dir(site: str | None, machine: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "humwatch" / "agent" / f"{site or 'default'}-{machine}"


class Agent:
    """Publishes chunks from a source through the spool; one MQTT connection."""

    def __init__(self, options: AgentOptions) -> None:
        self.options = options
        self.topic = options.names.mqtt_topic(options.site, options.machine)
        directory = options.buffer_dir or default_buffer_dir(options.site, options.machine)
        self.spool = Spool(directory, options.buffer_bytes)
        self.url = MqttUrl.parse(options.mqtt_url)
        self.client_id = (
            options.client_id or f"humwatch-agent-{options.site or 'default'}-{options.machine}"
        )
        self._acks: queue.Queue[int] = queue.Queue()
        self._wake = threading.Event()
        self._connected = threading.Event()
        self._connected_at = 0.0
        self.in_flight: dict[int, tuple[int, float]] = {}  # mid -> (seq, published at)
        self.counts = {"chunks": 0, "acked": 0, "republished": 0}
        self.stop = threading.Event()
        self._closing = False

    # paho callbacks (its network thread): only hand events to the main thread.
    def _on_connect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            log.warning("MQTT connect refused: %s", reason_code)
            return
        self._connected_at = time.monotonic()
        self._connected.set()
        self._wake.set()
        log.info("connected to %s; publishing to %s", self.url, self.topic)

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        if self._connected.is_set() and not self._closing:
            log.warning("MQTT broker %s lost (%s); buffering on disk", self.url, reason_code)
        self._connected.clear()

    def _on_publish(self, _client, _userdata, mid, _reason_code, _properties) -> None:
        self._acks.put(mid)
        self._wake.set()

    def run(self, chunks: Iterator[tuple[datetime, np.ndarray]], *, forever: bool) -> dict:
        client = make_client(self.url, self.client_id, clean_session=True)
        client.max_inflight_messages_set(MAX_INFLIGHT)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.connect_async(self.url.host, self.url.port, keepalive=30)
        client.loop_start()
        try:
            return self._loop(client, chunks, forever)
        finally:
            self._closing = True
            client.disconnect()
            client.loop_stop()

    def _loop(self, client, chunks, forever: bool) -> dict:
        options = self.options
        source: Iterator | None = iter(chunks)
        replay_started = time.monotonic()
        produced_seconds = 0.0
        drain_deadline = None
        while not self.stop.is_set():
            self._settle_acks()
            if self._connected.is_set():
                self._republish_stale(client)
                self._publish_pending(client)
            if source is not None:
                if options.pace <= 0:  # a replay: only as fast as the broker takes them
                    ready = len(self.spool) < MAX_INFLIGHT
                else:
                    elapsed = time.monotonic() - replay_started
                    ready = elapsed >= produced_seconds / options.pace
                if ready:
                    try:
                        started_at, pcm = next(source)
                    except StopIteration:
                        source = None
                        if options.drain_timeout is not None:
                            drain_deadline = time.monotonic() + options.drain_timeout
                        continue
                    self._spool_chunk(started_at, pcm)
                    produced_seconds += pcm.size / options.sample_rate
                    continue
            elif not self.spool and not forever:
                break
            elif drain_deadline is not None and time.monotonic() > drain_deadline:
                log.warning(
                    "gave up waiting for the broker: %d chunk(s) stay buffered", len(self.spool)
                )
                break
            self._wake.wait(0.05)
            self._wake.clear()
        return self.summary()

    def _spool_chunk(self, started_at: datetime, pcm: np.ndarray) -> None:
        options = self.options
        seq = self.spool.take_seq()
        chunk = envelope.Chunk(
            machine=options.machine,
            site=options.site,
            started_at=started_at,
            audio=encode_flac(pcm, options.sample_rate),
            conditions=dict(options.conditions),
            seq=seq,
            published_at=time.time(),
            agent=self.client_id,
        )
        in_flight = {s for s, _ in self.in_flight.values()}
        self.spool.add(seq, envelope.encode(chunk), in_flight)
        self.counts["chunks"] += 1

    def _settle_acks(self) -> None:
        while True:
            try:
                mid = self._acks.get_nowait()
            except queue.Empty:
                return
            entry = self.in_flight.pop(mid, None)
            if entry is not None:
                self.spool.remove(entry[0])
                self.counts["acked"] += 1

    def _publish_pending(self, client) -> None:
        while len(self.in_flight) < MAX_INFLIGHT:
            seq = self.spool.oldest({s for s, _ in self.in_flight.values()})
            if seq is None:
                return
            self._publish(client, seq)

    def _publish(self, client, seq: int) -> None:
        try:
            payload = self.spool.read(seq)
        except OSError:
            self.spool.remove(seq)
            return
        info = client.publish(self.topic, payload, qos=1)
        self.in_flight[info.mid] = (seq, time.monotonic())

    def _republish_stale(self, client) -> None:
        """Chunks unacknowledged ``ack_timeout`` after both their publish and the latest
        connect: publish again (paho normally resends them itself after a reconnect)."""
        now = time.monotonic()
        limit = self.options.ack_timeout
        for mid, (seq, at) in list(self.in_flight.items()):
            if now - at > limit and now - self._connected_at > limit:
                del self.in_flight[mid]
                if seq in self.spool.files:
                    self._publish(client, seq)
                    self.counts["republished"] += 1

    def summary(self) -> dict[str, Any]:
        return {
            "machine": self.options.machine,
            "topic": self.topic,
            **self.counts,
            "buffered": len(self.spool),
            "dropped": self.spool.dropped,
            "buffer_dir": str(self.spool.directory),
        }
