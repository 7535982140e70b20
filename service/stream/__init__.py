"""Edge and queue: ``agent`` (sound card or files -> MQTT, store-and-forward), ``bridge``
(MQTT -> NATS JetStream work queue) and ``worker`` (JetStream -> the ingest service layer).

Topics and subjects (``topics``), the chunk message (``envelope``), and each process in a
module of its own. The brokers' client libraries (paho-mqtt, nats-py) are imported by the
process that needs them only.
"""
