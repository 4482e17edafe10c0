"""Layer 1: the outside world (cameras, the TFLite runtime, SQLite, MQTT, systemd, logs)."""
