"""A real RTSP camera on loopback for the fault tests: GStreamer's gst-rtsp-server serving a test pattern.

Run with Debian's system Python (``/usr/bin/python3``), which has PyGObject and the GstRtspServer
typelib (``gir1.2-gst-rtsp-server-1.0``, ``python3-gi``); the project's venv does not. It uses
only the standard library and ``gi``, prints ``READY <url>`` once it listens, and serves until
killed, so a test can kill it, restart it on the same port, or freeze it with SIGSTOP.

Usage: /usr/bin/python3 tests/rtsp_server.py PORT
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PATH = "/cam"
SOURCE = "videotestsrc is-live=true pattern=ball ! video/x-raw,width=160,height=120,framerate=25/1"
# H.264 as IP cameras send it (x264enc is in gstreamer1.0-plugins-ugly). RTP/JPEG is not an option:
# OpenCV's FFMPEG backend never finishes probing it and the open times out.
ENCODE = "x264enc tune=zerolatency speed-preset=ultrafast key-int-max=25 ! rtph264pay name=pay0 pt=96"


def main() -> None:
    port = sys.argv[1]
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(f"( {SOURCE} ! {ENCODE} )")
    factory.set_shared(True)
    server.get_mount_points().add_factory(PATH, factory)
    if server.attach(None) == 0:
        sys.exit(f"cannot listen on 127.0.0.1:{port}")
    print(f"READY rtsp://127.0.0.1:{port}{PATH}", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
