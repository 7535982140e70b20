"""MQTT connection settings from a URL (``mqtt://user:pass@host:1883``, ``mqtts://`` for TLS)
and a paho-mqtt client made from them."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class MqttUrl:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> MqttUrl:
        parts = urlsplit(url if "://" in url else f"mqtt://{url}")
        if parts.scheme not in ("mqtt", "mqtts", "tcp", "ssl"):
            raise ValueError(f"MQTT URL {url!r}: use mqtt://host:1883 or mqtts://host:8883")
        tls = parts.scheme in ("mqtts", "ssl")
        if not parts.hostname:
            raise ValueError(f"MQTT URL {url!r} names no host")
        return cls(
            host=parts.hostname,
            port=parts.port or (8883 if tls else 1883),
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def __str__(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def make_client(url: MqttUrl, client_id: str, *, clean_session: bool, manual_ack: bool = False):
    """A paho-mqtt (2.x) MQTT 3.1.1 client; not connected yet."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
        manual_ack=manual_ack,
    )
    if url.username:
        client.username_pw_set(url.username, url.password)
    if url.tls:
        client.tls_set()
    client.reconnect_delay_set(min_delay=0.2, max_delay=5)
    return client
