"""The stack's own memory: what any daemon built on the device's packages pays before a line of ours runs.

``python -m bench.stack SOURCE MODEL RUNTIME_MODULE`` imports what the device cannot do without (numpy,
OpenCV, the TFLite runtime, paho-mqtt, which imports ``ssl``, and ``sqlite3`` for the outbox), loads
the model and runs each of its signatures once a window, and reads the stream the way the daemon
does at its default (one decoder thread, every frame). None of the daemon's code, config or threads
is loaded: its peak RSS is a floor under any daemon on these packages, and the daemon's peak minus it
is what our code, pydantic and the pipeline cost. This module imports nothing at the top, so the
child measured is that stack alone.
"""

from __future__ import annotations

import sys

# The model runs every WINDOW frames read, as the daemon runs it all along. Its buffers are allocated
# with the interpreter and at its first run, so how often it runs does not move the peak.
WINDOW = 20


def run(source: str, model: str, runtime_module: str) -> int:
    """Read every frame of ``source`` with ``model`` loaded and run; the number of frames read."""
    import importlib
    import sqlite3  # noqa: F401 - the outbox's

    import cv2
    import numpy as np
    import paho.mqtt.client  # noqa: F401 - MQTT, with the ssl it imports

    interpreter = importlib.import_module(runtime_module).Interpreter(model_path=model, num_threads=1)
    interpreter.allocate_tensors()
    runners = [interpreter.get_signature_runner(name) for name in interpreter.get_signature_list()]
    inputs = [{k: np.zeros(d["shape"], d["dtype"]) for k, d in r.get_input_details().items()} for r in runners]
    capture = cv2.VideoCapture(source, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    frames = 0
    while capture.read()[0]:
        frames += 1
        if frames % WINDOW == 0:
            for runner, given in zip(runners, inputs, strict=True):
                runner(**given)
    capture.release()
    return frames


if __name__ == "__main__":
    run(*sys.argv[1:4])
