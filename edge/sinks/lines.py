"""Events as JSON lines: on stdout when there is no broker, or into replay's events.jsonl."""

from __future__ import annotations

import threading
from typing import IO, TextIO

from edge.core.messages import message_json
from edge.core.values import Output
from edge.sinks.base import Sink


class StdoutSink(Sink):
    """One line per event on a text stream (stdout), flushed at once so a pipe sees it."""

    description = "stdout"

    def __init__(self, out: TextIO) -> None:
        super().__init__()
        self.out = out
        self._out_lock = threading.Lock()

    def deliver(self, camera_id: str, output: Output) -> None:
        line = message_json(output.event).decode() + "\n"
        with self._out_lock:
            self.out.write(line)
            self.out.flush()


class EventsFile(Sink):
    """One line per event in a binary file: replay's events.jsonl, the exact payloads MQTT would carry."""

    def __init__(self, file: IO[bytes]) -> None:
        super().__init__()
        self.file = file
        self.description = getattr(file, "name", "a file")

    def deliver(self, camera_id: str, output: Output) -> None:
        self.file.write(message_json(output.event) + b"\n")
