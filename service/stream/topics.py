"""Names on the wire, in one place.

MQTT (agent -> bridge), QoS 1, one topic per microphone::

    humwatch/{site}/{machine}/audio          one chunk (see ``envelope``)

NATS JetStream (bridge -> workers)::

    stream  HUMWATCH_AUDIO   subjects humwatch.audio.>   retention: work queue (a message is
                                                          deleted once a worker acks it)
    subject humwatch.audio.{site}.{machine}               one chunk, header Nats-Msg-Id =
                                                          {machine}:{sha256}:{started_at}
                                                          (JetStream drops republished copies
                                                          within its duplicate window)
    consumer humwatch-workers (durable, pull, explicit ack)
    stream  HUMWATCH_DEAD    subjects humwatch.dead.>    retention: limits (kept for people)
    subject humwatch.dead.{site}.{machine}                a refused chunk, headers
                                                          Humwatch-Reason / Humwatch-Error

Sites and machine ids are slugs; a site that is not one (or none) becomes ``default``.
Prefixes are configurable (tests use unique ones so parallel runs never meet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_SITE = "default"
MQTT_PREFIX = "humwatch"
NATS_PREFIX = "humwatch"
STREAM = "HUMWATCH_AUDIO"
DEAD_STREAM = "HUMWATCH_DEAD"
CONSUMER = "humwatch-workers"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def token(value: str | None) -> str:
    """A site or machine id usable as one MQTT topic level and one NATS subject token."""
    if value and _TOKEN.match(value):
        return value
    if value is None or value == "":
        return DEFAULT_SITE
    raise ValueError(
        f"{value!r} cannot name a topic level: use letters, digits, '-' and '_' (1-64)"
    )


@dataclass(frozen=True)
class Names:
    """Every name the three processes share, from two prefixes and two stream names."""

    mqtt_prefix: str = MQTT_PREFIX
    nats_prefix: str = NATS_PREFIX
    stream: str = STREAM
    dead_stream: str = DEAD_STREAM
    consumer: str = CONSUMER

    def mqtt_topic(self, site: str | None, machine: str) -> str:
        return f"{self.mqtt_prefix}/{token(site)}/{token(machine)}/audio"

    @property
    def mqtt_subscription(self) -> str:
        return f"{self.mqtt_prefix}/+/+/audio"

    def audio_subject(self, site: str | None, machine: str) -> str:
        return f"{self.nats_prefix}.audio.{token(site)}.{token(machine)}"

    @property
    def audio_subjects(self) -> str:
        return f"{self.nats_prefix}.audio.>"

    def dead_subject(self, site: str | None, machine: str | None) -> str:
        return f"{self.nats_prefix}.dead.{token(site)}.{token(machine or 'unknown')}"

    @property
    def dead_subjects(self) -> str:
        return f"{self.nats_prefix}.dead.>"
