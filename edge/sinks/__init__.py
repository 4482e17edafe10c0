"""Where a camera's outputs go; ``sink_for`` is the one place that chooses."""

from __future__ import annotations

import sys
from typing import TextIO

from edge.core.config import Config
from edge.sinks.base import FanOut, Sink
from edge.sinks.lines import StdoutSink
from edge.sinks.mqtt import MqttSink


def sink_for(config: Config, echo: TextIO | None = None) -> Sink:
    """The broker when one is configured, else stdout; with ``echo``, event lines there as well."""
    if config.mqtt.url is None:
        return StdoutSink(echo or sys.stdout)
    if echo is None:
        return MqttSink(config)
    return FanOut(StdoutSink(echo), MqttSink(config))
