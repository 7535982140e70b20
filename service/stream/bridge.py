"""``humwatch bridge``: MQTT chunks into the JetStream work queue, acknowledged only once stored.

The bridge keeps a persistent MQTT session (clean session off, a fixed client id) with a
QoS 1 subscription to ``humwatch/+/+/audio``: while it is away the broker queues the chunks
for it. Each message is published to JetStream (subject ``humwatch.audio.{site}.{machine}``,
header ``Nats-Msg-Id`` = machine:sha256:start) and the MQTT PUBACK is sent only after
JetStream answered that it stored it (paho's manual ack). If JetStream is unreachable the
bridge keeps retrying that message and acknowledges nothing meanwhile; a message delivered
twice (the bridge died between storing and acking) is dropped by JetStream's duplicate window,
and after that by the service's idempotency. A payload that is not a chunk message goes to the
dead-letter subject (reason ``bad_message``) so it cannot block the subscription.

Start the bridge before the agents: an MQTT broker keeps messages only for sessions it knows.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, field

from service.stream import envelope, jetstream
from service.stream.mqtt import MqttUrl, make_client
from service.stream.topics import Names, token

log = logging.getLogger("humwatch.bridge")

PUBLISH_TIMEOUT_SECONDS = 5.0


@dataclass
class BridgeOptions:
    mqtt_url: str
    nats_url: str
    names: Names = field(default_factory=Names)
    client_id: str = "humwatch-bridge"
    keepalive: int = 30


class Bridge:
    def __init__(self, options: BridgeOptions) -> None:
        self.options = options
        self.stopping = threading.Event()
        self.counts = {"forwarded": 0, "duplicates": 0, "dead_lettered": 0, "retries": 0}
        self.connected = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._js = None

    async def run(self, until: asyncio.Event | None = None) -> dict[str, int]:
        options, names = self.options, self.options.names
        url = MqttUrl.parse(options.mqtt_url)
        self._loop = asyncio.get_running_loop()
        nc = await jetstream.connect(options.nats_url, name="humwatch-bridge")
        self._js = nc.jetstream()
        await jetstream.ensure_streams(self._js, names)
        client = make_client(url, options.client_id, clean_session=False, manual_ack=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.connect_async(url.host, url.port, keepalive=options.keepalive)
        client.loop_start()
        log.info(
            "bridge %s %s -> %s %s", url, names.mqtt_subscription, options.nats_url, names.stream
        )
        try:
            while not self.stopping.is_set() and not (until is not None and until.is_set()):
                await asyncio.sleep(0.2)
        finally:
            self.stopping.set()
            client.disconnect()
            client.loop_stop()
            with contextlib.suppress(Exception):
                await nc.close()
        return dict(self.counts)

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if reason_code.is_failure:
            log.warning("MQTT connect refused: %s", reason_code)
            return
        client.subscribe(self.options.names.mqtt_subscription, qos=1)
        self.connected.set()
        log.info("MQTT connected; subscribed to %s", self.options.names.mqtt_subscription)

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self.connected.clear()
        if not self.stopping.is_set():
            log.warning("MQTT disconnected (%s); reconnecting", reason_code)

    def _on_message(self, client, _userdata, msg) -> None:
        """paho's thread: store in JetStream (blocking, retried), then PUBACK."""
        delay = 0.2
        while not self.stopping.is_set():
            future = asyncio.run_coroutine_threadsafe(
                self._forward(msg.topic, bytes(msg.payload)), self._loop
            )
            try:
                future.result(timeout=PUBLISH_TIMEOUT_SECONDS + 5)
                break
            except Exception as exc:  # noqa: BLE001 - JetStream away: keep it, retry
                future.cancel()
                self.counts["retries"] += 1
                log.warning("JetStream publish failed (%s); retrying in %.1f s", exc, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        else:
            return  # stopping: not acked, so the broker delivers it again next time
        client.ack(msg.mid, msg.qos)

    async def _forward(self, topic: str, payload: bytes) -> None:
        names = self.options.names
        levels = topic.split("/")
        site, machine = (levels[-3], levels[-2]) if len(levels) >= 3 else (None, None)
        try:
            header = envelope.peek_header(payload)
        except envelope.EnvelopeError as exc:
            await self._dead_letter(payload, site, machine, str(exc))
            return
        machine = header.get("machine") if isinstance(header.get("machine"), str) else machine
        site = header.get("site") if isinstance(header.get("site"), str) else site
        try:
            subject = names.audio_subject(site, machine or "")
        except ValueError as exc:
            await self._dead_letter(payload, None, None, str(exc))
            return
        digest = header.get("sha256") or hashlib.sha256(payload).hexdigest()
        ack = await self._js.publish(
            subject,
            payload,
            timeout=PUBLISH_TIMEOUT_SECONDS,
            stream=names.stream,
            headers={"Nats-Msg-Id": f"{machine}:{digest}:{header.get('started_at')}"},
        )
        self.counts["duplicates" if ack.duplicate else "forwarded"] += 1

    async def _dead_letter(self, payload: bytes, site, machine, reason: str) -> None:
        names = self.options.names
        try:
            subject = names.dead_subject(token(site), token(machine or "unknown"))
        except ValueError:
            subject = names.dead_subject(None, None)
        await self._js.publish(
            subject,
            payload,
            timeout=PUBLISH_TIMEOUT_SECONDS,
            stream=names.dead_stream,
            headers={
                "Humwatch-Reason": "bad_message",
                "Humwatch-Error": reason[:1000],
                "Nats-Msg-Id": "dead:" + hashlib.sha256(payload).hexdigest(),
            },
        )
        self.counts["dead_lettered"] += 1
        log.warning("message on MQTT is not a chunk (%s); dead-lettered", reason)


def run_bridge(options: BridgeOptions) -> dict[str, int]:
    """Run until SIGTERM/SIGINT."""
    bridge = Bridge(options)

    async def main() -> dict[str, int]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, bridge.stopping.set)
        return await bridge.run()

    return asyncio.run(main())
