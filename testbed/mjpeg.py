"""An HTTP MJPEG camera played from a recording: its JPEGs as multipart/x-mixed-replace, in real time.

The benchmarks need a camera that sends what an MJPEG camera sends, at a camera's pace: the sampler
picks frames by arrival time, so a stream sent as fast as possible would be sampled at a fraction
of its frames and flatter the daemon. The JPEGs are the recording's own packets (an MJPEG AVI read
in OpenCV's raw mode), so nothing is re-encoded; each connection plays the recording once and closes.
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2

BOUNDARY = "frame"


def jpeg_part(jpeg: bytes) -> bytes:
    """One part of a multipart/x-mixed-replace stream: the boundary, the headers and the JPEG."""
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n".encode()
    return head + jpeg + b"\r\n"


def read_jpegs(path: Path) -> list[bytes]:
    """The JPEG of every frame of an MJPEG recording, undecoded."""
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_FORMAT, -1])
    jpegs = []
    while capture.grab():
        ok, packet = capture.retrieve()
        if ok and packet is not None:
            jpegs.append(packet.tobytes())
    capture.release()
    if not jpegs:
        raise ValueError(f"{path}: no JPEG frames (is it an MJPEG recording?)")
    return jpegs


class MjpegCamera:
    """Serves ``jpegs`` at ``fps`` to every client, once per connection; ``url`` is the stream."""

    def __init__(self, jpegs: list[bytes], fps: float) -> None:
        self.jpegs = jpegs
        self.closing = threading.Event()
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                start = time.monotonic()
                for i, jpeg in enumerate(camera.jpegs):
                    if camera.closing.wait(max(0.0, start + i / fps - time.monotonic())):
                        return
                    try:
                        self.wfile.write(jpeg_part(jpeg))
                    except OSError:  # the client went away
                        return

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()
