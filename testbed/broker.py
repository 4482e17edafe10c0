"""Real mosquitto brokers on free loopback ports (plain, password, TLS + password) and a real subscriber.

Each broker can be stopped and started again on the same port, which is how the outage tests cut
the network. Persistence is off unless a test asks for it (a subscriber's persistent session that
must survive a broker restart).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt

USERNAME = "edge-device"
PASSWORD = "Sup3r-s3cret-pw-7Q"  # the secret-leak test greps every output for this string


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if not found:
        raise FileNotFoundError("mosquitto is not installed: apt-get install -y mosquitto mosquitto-clients "
                                "(.ci/run does)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class TlsFiles:
    ca_file: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that did not sign the server: the "wrong CA" case


@dataclass
class Broker:
    """One mosquitto process; ``url`` is what the daemon's ``mqtt.url`` should be."""

    workdir: Path
    port: int
    username: str | None = None
    password: str | None = None
    tls: TlsFiles | None = None
    persistence: bool = False
    host: str = "127.0.0.1"
    extra: tuple[str, ...] = ()  # more mosquitto.conf lines, e.g. a bridge to another broker
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def connect_host(self) -> str:
        """The name to dial: the TLS certificate is issued to localhost."""
        return "localhost" if self.tls else self.host

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.connect_host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def _write_config(self) -> Path:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "user root",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log_path}",
            "log_type all",
            "max_queued_messages 100000",
        ]
        if self.username:
            passwd = self.workdir / "passwd"
            subprocess.run(
                ["mosquitto_passwd", "-b", "-c", str(passwd), self.username, self.password or ""],
                check=True, capture_output=True,
            )
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if self.tls:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                "require_certificate false",
            ]
        lines += self.extra
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart) on the same port and wait until it accepts connections."""
        assert self.proc is None, "broker already running"
        conf = self._write_config()
        self.proc = subprocess.Popen(
            [mosquitto_binary(), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                log = self.log_path.read_text() if self.log_path.exists() else ""
                self.proc = None
                raise RuntimeError(f"mosquitto exited at start: {err} {log[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {timeout} s")

    def stop(self) -> None:
        """SIGTERM and wait: with persistence on, mosquitto saves its sessions on the way out."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_tls_files(directory: Path) -> TlsFiles:
    """A throwaway CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for ca in ("ca", "other-ca"):
        _openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "3",
                 "-subj", f"/CN=rclstm test {ca}", cwd=directory)
    (directory / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
        extra = ["-extfile", "san.ext"] if name == "server" else []
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "3", *extra, cwd=directory)
    return TlsFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key",
                    directory / "client.crt", directory / "client.key", directory / "other-ca.crt")


class Subscriber:
    """A real paho client collecting every message on ``topic``; resubscribes after a reconnect."""

    def __init__(self, broker: Broker, topic: str = "#", *, persistent_id: str | None = None) -> None:
        self.topic = topic
        self.messages: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        self.connected = threading.Event()  # set once the subscription is acknowledged
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=persistent_id or f"test-sub-{free_port()}",
            clean_session=persistent_id is None,
            protocol=mqtt.MQTTv311,
        )
        if broker.username:
            self.client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            self.client.tls_set(ca_certs=str(broker.tls.ca_file))
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.on_subscribe = lambda *a: self.connected.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.connect_host, broker.port)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise RuntimeError("subscriber could not connect")

    def _on_connect(self, client: mqtt.Client, userdata: object, flags: object, reason: object, props: object) -> None:
        client.subscribe(self.topic, qos=1)

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def on(self, topic: str) -> list[mqtt.MQTTMessage]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, predicate: Callable[[list[mqtt.MQTTMessage]], bool], timeout: float = 30.0) -> bool:
        """True once ``predicate(messages)`` holds; False on timeout (the caller asserts with context)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(list(self.messages)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.5))
            return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
