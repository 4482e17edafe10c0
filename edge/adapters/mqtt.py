"""MQTT: drain the outbox to the broker in order, keep device and camera state retained, report faults.

A row leaves the outbox only when the broker acknowledged it (PUBACK seen in ``on_publish``, with a
success reason code under MQTT 5). paho resends its in-flight messages after a reconnect; after a
restart the publisher starts again from the oldest row. Either way delivery is at-least-once and in
order; consumers deduplicate by the event id.

Connection problems (refused credentials, an unknown CA, TLS spoken to a plain port) are logged as
one line naming the likely fix, repeated attempts of the same failure go to debug, and paho's own
back-off (1 s doubling to 60 s) keeps a misconfigured device from hammering the broker.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from edge.adapters.outbox import Outbox
from edge.core.config import ConfigError, MqttConfig, resolve_key_file

log = logging.getLogger(__name__)

MAX_INFLIGHT = 20
# Bytes of messages the outbox could not store that paho may hold in memory at once. paho's own queue has
# no bound, and while SQLite fails and the broker is away it would grow with every event; past this the
# sink holds them (bounded too) until the outbox takes them again. 4 MB: thousands of events, or 40
# snapshots of the largest size allowed.
MAX_UNSAVED_BYTES = 4_000_000
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 60


class Topics:
    """Every topic is under ``{prefix}/{device}/`` so a broker ACL can pin a device to its own subtree."""

    def __init__(self, prefix: str, device_id: str) -> None:
        self.base = f"{prefix}/{device_id}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    @property
    def check(self) -> str:
        return f"{self.base}/check"

    @property
    def feedback(self) -> str:
        """Where a backend publishes verdicts for this device (the one topic the device subscribes to)."""
        return f"{self.base}/feedback"

    def camera(self, camera_id: str, kind: str) -> str:
        """``events``, ``status`` or ``snapshot`` of one camera."""
        return f"{self.base}/{camera_id}/{kind}"


class _Client(mqtt.Client):
    """paho's client, remembering why the last connection attempt failed.

    paho's network thread swallows the exception of a failed (re)connect and only calls
    ``on_connect_fail``; keeping it here is what lets the log say *why* (bad CA, refused port...).
    """

    last_error: OSError | None = None

    def reconnect(self) -> mqtt.MQTTErrorCode:
        try:
            return super().reconnect()
        except OSError as exc:
            self.last_error = exc
            raise


def client_id_for(cfg: MqttConfig, device_id: str) -> str:
    return cfg.client_id or f"rclstm-edge-{device_id}"


def build_client(cfg: MqttConfig, client_id: str, password: str | None) -> _Client:
    """A configured (not yet connected) client: protocol, client id, TLS and credentials."""
    v5 = cfg.protocol == "5"
    client = _Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        **({} if v5 else {"clean_session": True}),
    )
    if cfg.tls:
        key_file = resolve_key_file(cfg)
        if (cfg.cert_file is None) != (key_file is None):
            raise ConfigError(["mqtt.cert_file and mqtt.key_file: set both for a client certificate, or neither"])
        for name, path in (("ca_file", cfg.ca_file), ("cert_file", cfg.cert_file), ("key_file", key_file)):
            if path is not None and not path.is_file():
                raise ConfigError([f"mqtt.{name} = '{path}': no such file; fix the path or remove the key"])
        try:
            client.tls_set(
                ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
                certfile=str(cfg.cert_file) if cfg.cert_file else None,
                keyfile=str(key_file) if key_file else None,
                cert_reqs=ssl.CERT_NONE if cfg.tls_insecure else ssl.CERT_REQUIRED,
            )
        except (ssl.SSLError, OSError, ValueError) as exc:
            problem = f"mqtt TLS files cannot be loaded ({_reason(exc)}); check ca_file, cert_file and key_file"
            raise ConfigError([problem]) from None
        if cfg.tls_insecure:
            client.tls_insecure_set(True)
            log.warning("mqtt.tls_insecure is on: the broker's certificate is NOT verified")
    if cfg.username:
        client.username_pw_set(cfg.username, password)
    client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
    return client


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or getattr(exc, "strerror", None)
    return str(text or exc or type(exc).__name__).splitlines()[0]


def describe_connect_error(exc: BaseException | None, cfg: MqttConfig) -> str:
    """One line: what went wrong connecting to the broker and what to check."""
    where = f"{cfg.host}:{cfg.port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate of {where} not trusted ({_reason(exc)}); check mqtt.ca_file and the host name"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {where} failed ({_reason(exc)}); is it a TLS port and are the certificates right?"
    if cfg.tls and isinstance(exc, (ConnectionResetError, BrokenPipeError)):
        return f"{where} dropped the TLS handshake ({_reason(exc)}); is it a plain MQTT port that needs mqtt://?"
    if isinstance(exc, ConnectionRefusedError):
        return f"nothing accepts connections at {where}; is the broker running and mqtt.url right?"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve {cfg.host!r} ({_reason(exc)}); check mqtt.url and DNS"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return f"timed out connecting to {where}; check the network and mqtt.url"
    if exc is None:
        return f"cannot connect to {where}"
    return f"cannot connect to {where} ({_reason(exc)})"


def describe_no_connack(reason: ReasonCode | Any, cfg: MqttConfig) -> str:
    """A TCP connection that ended before the broker's CONNACK: silence, or the other side hung up."""
    where = f"{cfg.host}:{cfg.port}"
    if "keep alive" in str(reason).lower() or "timeout" in str(reason).lower():
        return (f"{where} accepted the connection but never answered within {cfg.keepalive_s} s ({reason}); "
                "is an MQTT broker listening there, and is it overloaded?")
    hint = "" if cfg.tls else "; is it a TLS port that needs mqtts://?"
    return f"{where} closed the connection before answering ({reason}){hint}"


def describe_refusal(reason: ReasonCode | Any, cfg: MqttConfig) -> str:
    text = str(reason)
    hint = ""
    if "auth" in text.lower() or "user name or password" in text.lower() or "identifier" in text.lower():
        hint = "; check mqtt.username and the password (RCLSTM_MQTT_PASSWORD, credential or password_file)"
    return f"broker {cfg.host}:{cfg.port} refused the connection: {text}{hint}"


class Publisher:
    """Owns the MQTT connection of the daemon.

    The outbox is drained by a thread of its own, woken by ``notify()`` (a new row), by a connect
    and by each acknowledgement, with at most ``max_inflight`` rows handed to paho at a time.
    """

    def __init__(
        self,
        cfg: MqttConfig,
        device_id: str,
        outbox: Outbox | None,
        password: str | None,
        max_inflight: int = MAX_INFLIGHT,
        max_unsaved_bytes: int = MAX_UNSAVED_BYTES,
    ) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.prefix, device_id)
        self.outbox = outbox
        self.max_inflight = max_inflight
        self.max_unsaved_bytes = max_unsaved_bytes
        self.connected = threading.Event()
        self.acked = 0
        self.rejected = 0
        self.connects = 0
        self._client = build_client(cfg, client_id_for(cfg, device_id), password)
        self._client.will_set(self.topics.status, "offline", qos=1, retain=True)
        self._client.on_connect = self._on_connect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._inbox: dict[str, Callable[[bytes], None]] = {}  # subscribed topic -> handler
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._state: dict[str, bytes] = {}  # retained state, republished on every connect
        self._rows: dict[int, int] = {}  # paho mid -> outbox row id, for rows handed to paho
        self._others: set[int] = set()  # mids of messages outside the outbox
        # mid -> size of those among them the outbox could not store (lost if unacked)
        self._unsaved: dict[int, int] = {}
        self._early: dict[int, ReasonCode | None] = {}  # acks that arrived before publish() returned
        self._last_sent: int | None = None
        self._dirty = False  # something changed since the drainer last looked (no lost wake-ups)
        self._last_problem: str | None = None
        self._stopping = threading.Event()
        self._drainer = threading.Thread(target=self._drain_loop, name="mqtt-outbox", daemon=True)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=self.cfg.keepalive_s)
        self._client.loop_start()
        self._drainer.start()

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty and nothing is in flight; False when time ran out."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._backlog():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._wake.notify_all()
                self._wake.wait(min(remaining, 0.2))
        return True

    def _backlog(self) -> bool:
        return bool(self._rows) or bool(self._unsaved) or bool(self.outbox and self.outbox.depth())

    def unsaved(self) -> int:
        """Messages the outbox could not store that the broker has not acknowledged yet (memory only)."""
        with self._lock:
            return len(self._unsaved)

    def stop(self, timeout: float = 5.0) -> None:
        """Publish ``stopped`` (retained) and disconnect cleanly; a clean disconnect skips the Will."""
        if self.connected.is_set():
            info = self._publish(self.topics.status, b"stopped", qos=1, retain=True)
            if info is not None:
                # If the connection is lost meanwhile, the broker's Will says offline instead.
                with contextlib.suppress(RuntimeError, ValueError):
                    info.wait_for_publish(timeout)
        self._stopping.set()
        with self._wake:
            self._dirty = True
            self._wake.notify_all()
        self._client.disconnect()
        self._client.loop_stop()
        if self._drainer.is_alive():
            self._drainer.join(timeout=2)

    # -- what the daemon publishes -------------------------------------------------------------

    def set_state(self, topic: str, payload: bytes) -> None:
        """Retained state (e.g. a camera's status): sent now if connected and again on every reconnect."""
        with self._lock:
            self._state[topic] = payload
            connected = self.connected.is_set()
        if connected:
            self._publish(topic, payload, qos=1, retain=True)

    def publish_json(self, topic: str, data: dict[str, Any], qos: int = 0) -> None:
        """Best-effort telemetry (stats): dropped while offline, the next one supersedes it."""
        if self.connected.is_set():
            self._publish(topic, json.dumps(data, separators=(",", ":")).encode(), qos=qos, retain=False)

    def publish_direct(self, topic: str, payload: bytes, qos: int = 1) -> bool:
        """A message kept only in paho's memory: what the outbox could not store (SQLite failed).

        False, and nothing queued, when that memory already holds ``max_unsaved_bytes`` or paho refused
        it: the caller keeps the message until the outbox can store it."""
        with self._lock:
            if sum(self._unsaved.values()) + len(payload) > self.max_unsaved_bytes:
                return False
        info = self._publish(topic, payload, qos=qos, retain=False)
        if info is None:
            return False
        with self._lock:
            if info.mid in self._others:
                self._unsaved[info.mid] = len(payload)
        return True

    def subscribe(self, topic: str, handler: Callable[[bytes], None]) -> None:
        """Before ``start``: receive ``topic`` (QoS 1, subscribed again on every connect) into ``handler``."""
        self._inbox[topic] = handler

    def notify(self) -> None:
        """A row was added to the outbox."""
        with self._wake:
            self._dirty = True
            self._wake.notify_all()

    # -- internals -------------------------------------------------------------------------------

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool, row_id: int | None = None) -> Any:
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError as exc:  # an invalid topic or an oversized payload can never be sent
            log.error("mqtt: cannot publish to %s (%s); dropping the message", topic, exc)
            with self._lock:
                self.rejected += 1
            if row_id is not None and self.outbox is not None:
                self.outbox.ack(row_id)
            return None
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            return None  # not queued by paho (queue full): the row stays and is tried again
        with self._lock:
            early = self._early.pop(info.mid, "none")
            if early == "none":
                if row_id is None:
                    self._others.add(info.mid)
                else:
                    self._rows[info.mid] = row_id
        if early != "none" and row_id is not None:
            self._settle(row_id, topic, early)
        return info

    def _drain_loop(self) -> None:
        while not self._stopping.is_set():
            with self._wake:
                if not self._dirty:
                    self._wake.wait(1.0)
                self._dirty = False
            if self.outbox is None or not self.connected.is_set():
                continue
            with self._lock:
                room = self.max_inflight - len(self._rows)
                after = self._last_sent
            if room <= 0:
                continue
            for row in self.outbox.pending(after_id=after, limit=room):
                if not self.connected.is_set() or self._stopping.is_set():
                    break
                if self._publish(row.topic, row.payload, qos=row.qos, retain=row.retain, row_id=row.id) is None:
                    break
                with self._lock:
                    self._last_sent = row.id

    def _settle(self, row_id: int, topic: str, reason: ReasonCode | None) -> None:
        if reason is not None and reason.is_failure:
            # Retrying a message the broker refuses (e.g. not authorized for the topic) would block
            # nothing but would resend it forever; it is dropped with a line saying why.
            log.error("mqtt: broker refused the message on %s (%s); check the broker ACL for this device",
                      topic, reason)
        with self._lock:  # the network thread and the drainer both settle messages
            if reason is not None and reason.is_failure:
                self.rejected += 1
            else:
                self.acked += 1
        if self.outbox is not None:
            self.outbox.ack(row_id)
        with self._wake:
            self._dirty = True
            self._wake.notify_all()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode | None,
                    properties: Any) -> None:
        with self._lock:
            row_id = self._rows.pop(mid, None)
            if row_id is None:
                if mid in self._others:
                    self._others.discard(mid)
                    self._unsaved.pop(mid, None)
                else:
                    self._early[mid] = reason
                return
        self._settle(row_id, "outbox", reason)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:
        if reason.is_failure:
            self._problem(describe_refusal(reason, self.cfg))
            return
        self.connects += 1
        self._last_problem = None
        log.info("mqtt: connected to %s:%d (%s)", self.cfg.host, self.cfg.port,
                 "reconnect" if self.connects > 1 else "first connect")
        self.connected.set()
        with self._lock:
            state = [(self.topics.status, b"online"), *self._state.items()]
        for topic, payload in state:
            self._publish(topic, payload, qos=1, retain=True)
        if self._inbox:
            client.subscribe([(topic, 1) for topic in self._inbox])
        with self._wake:
            self._dirty = True
            self._wake.notify_all()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        handler = self._inbox.get(message.topic)
        if handler is None:
            return
        try:
            handler(message.payload)
        except Exception:  # a bad message must never take the network thread (and with it the outbox) down
            log.exception("mqtt: handling a message on %s failed", message.topic)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      properties: Any) -> None:
        refused = [r for r in reasons if r.is_failure]
        if refused:  # once per connection, like the connection's own problems
            log.error("mqtt: the broker refused the subscription to %s (%s); verdicts will not arrive: let the device "
                      "read its feedback topic in the broker ACL", ", ".join(self._inbox), refused[0])
        else:
            log.info("mqtt: subscribed to %s", ", ".join(self._inbox))

    def _on_connect_fail(self, client: _Client, userdata: Any) -> None:
        self._problem(describe_connect_error(client.last_error, self.cfg))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       properties: Any) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if self._stopping.is_set():
            return
        if was_connected:
            log.warning("mqtt: lost the connection to %s:%d (%s); reconnecting with back-off",
                        self.cfg.host, self.cfg.port, reason)
        elif self._last_problem is None:
            self._problem(describe_no_connack(reason, self.cfg))

    def _problem(self, line: str) -> None:
        """The first occurrence of a connection problem is an error; retries of the same one are debug."""
        if line != self._last_problem:
            log.error("mqtt: %s; retrying with back-off up to %d s", line, RECONNECT_MAX_S)
            self._last_problem = line
        else:
            log.debug("mqtt: still failing: %s", line)


def check_broker(cfg: MqttConfig, device_id: str, password: str | None, timeout: float = 10.0) -> tuple[bool, str]:
    """Connect once, publish to the check topic and wait for its PUBACK: (passed, reason)."""
    topics = Topics(cfg.prefix, device_id)
    outcome: dict[str, Any] = {}
    connected = threading.Event()
    # A check must not kick the running daemon off the broker by reusing its client id.
    client = build_client(cfg, f"{client_id_for(cfg, device_id)}-check"[:64], password)

    def on_connect(c: mqtt.Client, u: Any, f: Any, reason: ReasonCode, p: Any) -> None:
        outcome["reason"] = reason
        connected.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *a: connected.set()
    try:
        client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
    except OSError as exc:
        return False, describe_connect_error(exc, cfg)
    client.loop_start()
    try:
        if not connected.wait(timeout):
            return False, f"no answer from {cfg.host}:{cfg.port} within {timeout:.0f} s"
        reason = outcome.get("reason")
        if reason is None:
            return False, f"{cfg.host}:{cfg.port} closed the connection before answering; is it a TLS port?"
        if reason.is_failure:
            return False, describe_refusal(reason, cfg)
        check_at = datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
        payload = json.dumps({"device_id": device_id, "check_at": check_at}).encode()
        info = client.publish(topics.check, payload, qos=1)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            return False, f"publish to {topics.check} failed ({exc})"
        if not info.is_published():
            return False, f"no PUBACK for {topics.check} within {timeout:.0f} s"
        over = " over TLS" if cfg.tls else ""
        return True, f"connected to {cfg.host}:{cfg.port}{over} and published to {topics.check}"
    finally:
        client.disconnect()
        client.loop_stop()

