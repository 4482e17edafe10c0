"""Broker fixtures: real mosquitto brokers on free ports (plain, TLS, password)."""
