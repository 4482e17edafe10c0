#!/usr/bin/env python3
"""Reference consumer of rclstm-edge events: subscribe, validate, deduplicate, print or store.

The devices deliver at least once: after a broker outage or a restart an event can arrive twice,
byte for byte. A message is identified by (event_id, type, seq); this consumer keeps the keys it
has seen, in memory (bounded) or in SQLite with ``--store FILE`` so duplicates are recognised
across its own restarts too, and handles each message once.

    python examples/subscriber.py --broker mqtt://broker:1883
    python examples/subscriber.py --broker mqtts://broker:8883 --ca ca.crt --username backend \\
        --password-env MQTT_PASSWORD --share alerts --store events.db --json

With ``--client-id ID`` it keeps a persistent session (MQTT 5: clean start off, a session expiry
interval of ``--session-expiry`` seconds, one day by default, QoS 1): the broker queues the events
published while it is down and delivers them when it comes back with the same id. Without a client
id the session is clean and anything published meanwhile is missed.

Beside the events it shows the device's state from the same prefix (unless ``--no-status``): the
retained ``{prefix}/{device}/status`` (``online``, ``stopped``, or the broker's Will ``offline``),
each camera's retained ``status`` (JSON: online, reason, since) and ``anomaly`` (``ON`` / ``OFF``),
as ``state ...`` lines (with ``--json``, one JSON object per line with ``"state"`` and ``"topic"``).
Events and state lines go to stdout; duplicates, invalid messages and the summary to stderr.

With ``--share GROUP`` it subscribes to ``$share/GROUP/<topic>`` (MQTT 5 shared subscription):
run several copies with the same group and the broker hands each message to one of them. Give
them the same ``--store`` file (SQLite serialises the writers) so a redelivery that lands on
another member is still recognised.

With ``--verdict DEVICE EVENT_ID false_alarm|confirmed`` it does not subscribe: it sends a person's
verdict on one incident to ``{prefix}/DEVICE/feedback`` (QoS 1, validated against
docs/schemas/feedback.json first), waits for the broker's acknowledgement and exits; the device keeps
the verdict beside the incident's clip (docs/mqtt.md, "Verdicts").

Needs paho-mqtt 2.x and, for validation, jsonschema (``--no-validate`` to run without it):
``pip install 'paho-mqtt>=2' jsonschema``, or ``pip install '.[subscriber]'`` from the checkout.
Exit codes: 0 stopped by SIGINT/SIGTERM or --max-events reached, 1 cannot run (jsonschema missing, schema
unreadable, broker unreachable), 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import sys
import threading
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

DEFAULT_TOPIC = "rclstm/+/+/events"
SCHEMAS = Path(__file__).resolve().parents[1] / "docs" / "schemas"
DEFAULT_SCHEMA = SCHEMAS / "event.json"
FEEDBACK_SCHEMA = SCHEMAS / "feedback.json"
VERDICTS = ("false_alarm", "confirmed")
MEMORY_KEYS = 100_000
SESSION_EXPIRY_S = 86_400

Key = tuple[str, str, int]


class MemorySeen:
    """The most recent keys, oldest forgotten first: a redelivery comes soon after the original."""

    def __init__(self, limit: int = MEMORY_KEYS) -> None:
        self.limit = limit
        self._keys: OrderedDict[Key, None] = OrderedDict()

    def add(self, key: Key, topic: str, payload: bytes) -> bool:
        """True when the key is new."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self.limit:
            self._keys.popitem(last=False)
        return True

    def close(self) -> None:
        pass


class SqliteSeen:
    """Every new event stored once; the primary key is what makes a duplicate a no-op."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS events (event_id TEXT NOT NULL, type TEXT NOT NULL, seq INTEGER NOT NULL,"
            " topic TEXT NOT NULL, payload TEXT NOT NULL, received_at TEXT NOT NULL DEFAULT"
            " (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')), PRIMARY KEY (event_id, type, seq))"
        )

    def add(self, key: Key, topic: str, payload: bytes) -> bool:
        cursor = self._db.execute(
            "INSERT OR IGNORE INTO events (event_id, type, seq, topic, payload) VALUES (?, ?, ?, ?, ?)",
            (*key, topic, payload.decode("utf-8")),
        )
        return cursor.rowcount == 1

    def close(self) -> None:
        self._db.close()


def load_validator(schema_path: Path) -> Any:
    try:
        import jsonschema
    except ImportError:
        sys.exit("error: jsonschema is not installed: pip install jsonschema (or pass --no-validate)")
    try:
        schema = json.loads(schema_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        sys.exit(f"error: --schema {schema_path}: cannot read a JSON Schema ({exc})")
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def describe(event: dict[str, Any]) -> str:
    """One human line per message."""
    return (f"{event['emitted_at']} {event['type']:6s} {event['site']}/{event['device_id']}/{event['camera_id']} "
            f"{event['label']} score={event['score']:.2f} peak={event['peak_score']:.2f} "
            f"event={event['event_id']} seq={event['seq']}"
            + (f" ({event['end_reason']})" if event.get("end_reason") else ""))


class Consumer:
    def __init__(self, args: argparse.Namespace, seen: MemorySeen | SqliteSeen, validator: Any) -> None:
        self.args = args
        self.seen = seen
        self.validator = validator
        self.counts = {"received": 0, "new": 0, "duplicates": 0, "invalid": 0}
        self.done = threading.Event()
        self._lock = threading.Lock()

    def handle(self, topic: str, payload: bytes) -> None:
        with self._lock:
            self.counts["received"] += 1
            try:
                event = json.loads(payload)
                if self.validator is not None:
                    self.validator.validate(event)
                key = (str(event["event_id"]), str(event["type"]), int(event["seq"]))
            except Exception as exc:  # any malformed message is reported and skipped, never fatal
                self.counts["invalid"] += 1
                reason = getattr(exc, "message", None) or str(exc)
                print(f"invalid message on {topic}: {reason.splitlines()[0][:200]}", file=sys.stderr, flush=True)
                return
            if not self.seen.add(key, topic, payload):
                self.counts["duplicates"] += 1
                print(f"duplicate {key[0]} {key[1]} seq={key[2]}", file=sys.stderr, flush=True)
                return
            self.counts["new"] += 1
            print(payload.decode("utf-8") if self.args.json else describe(event), flush=True)
            if self.args.max_events and self.counts["new"] >= self.args.max_events:
                self.done.set()

    def handle_state(self, topic: str, payload: bytes, retained: bool) -> None:
        """A device or camera state message: one line, never counted as an event."""
        text = payload.decode("utf-8", "replace")
        parts = topic.split("/")
        kind = parts[-1]
        where = "/".join(parts[1:-1])
        if self.args.json:
            value: Any = text
            if kind == "status" and len(parts) >= 4:
                with contextlib.suppress(ValueError):
                    value = json.loads(text)
            line = json.dumps({"state": kind, "topic": topic, "value": value, "retained": retained},
                              separators=(",", ":"))
        else:
            if kind == "status" and len(parts) >= 4:
                try:
                    status = json.loads(text)
                    text = (f"{'online' if status.get('online') else 'offline'} ({status.get('reason')}) "
                            f"since {status.get('since')}")
                except (ValueError, AttributeError):
                    pass
            label = {"status": "device" if len(parts) == 3 else "camera", "anomaly": "anomaly"}.get(kind, kind)
            line = f"state {label} {where} {text}" + (" (retained)" if retained else "")
        with self._lock:
            print(line, flush=True)

    def summary(self) -> str:
        return " ".join(f"{name}={count}" for name, count in self.counts.items())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Validate, deduplicate and print rclstm-edge events.")
    parser.add_argument("--broker", required=True, help="mqtt://HOST:1883 or mqtts://HOST:8883")
    parser.add_argument("--topic", default=DEFAULT_TOPIC, help=f"topic filter (default {DEFAULT_TOPIC})")
    parser.add_argument("--share", metavar="GROUP", help="subscribe as MQTT 5 shared subscription $share/GROUP/...")
    parser.add_argument("--username")
    parser.add_argument("--password-env", metavar="VAR", help="environment variable holding the password")
    parser.add_argument("--ca", type=Path, help="CA certificate for mqtts://")
    parser.add_argument("--client-id", default="",
                        help="client id; given, the session is persistent (clean start off, --session-expiry) so "
                             "events published while this consumer is down are delivered when it is back "
                             "(default: random id, clean start, nothing queued)")
    parser.add_argument("--session-expiry", type=int, default=SESSION_EXPIRY_S, metavar="S",
                        help=f"with --client-id: how long the broker keeps the session and its queued events "
                             f"after a disconnect (default {SESSION_EXPIRY_S} s)")
    parser.add_argument("--no-status", action="store_true",
                        help="do not show device status (Will), camera status and anomaly state")
    parser.add_argument("--schema", type=Path, default=DEFAULT_SCHEMA, help="event JSON Schema")
    parser.add_argument("--no-validate", action="store_true", help="skip JSON Schema validation")
    parser.add_argument("--store", type=Path, metavar="FILE", help="SQLite file: store events, dedupe across restarts")
    parser.add_argument("--json", action="store_true", help="print each new event as its JSON line")
    parser.add_argument("--max-events", type=int, default=0, metavar="N", help="exit after N new events")
    parser.add_argument("--verdict", nargs=3, metavar=("DEVICE", "EVENT_ID", "VERDICT"),
                        help=f"send a verdict ({' or '.join(VERDICTS)}) on incident EVENT_ID to DEVICE and exit")
    parser.add_argument("--prefix", default="rclstm", help="with --verdict: the devices' mqtt.prefix (default rclstm)")
    parser.add_argument("--judged-by", help="with --verdict: who judged it (an operator id)")
    parser.add_argument("--note", help="with --verdict: a short note (at most 500 characters)")
    args = parser.parse_args(argv)
    url = urlsplit(args.broker)
    if url.scheme not in ("mqtt", "mqtts") or not url.hostname:
        parser.error(f"--broker {args.broker!r}: must look like mqtt://host:1883 or mqtts://host:8883")
    if args.share and ("/" in args.share or "+" in args.share or "#" in args.share):
        parser.error(f"--share {args.share!r}: a group name must not contain '/', '+' or '#'")
    if args.session_expiry < 0:
        parser.error(f"--session-expiry {args.session_expiry}: must be 0 or more seconds")
    if args.password_env and args.password_env not in os.environ:
        parser.error(f"--password-env {args.password_env}: that variable is not set")
    if args.verdict and args.verdict[2] not in VERDICTS:
        parser.error(f"--verdict ... {args.verdict[2]!r}: the verdict must be {' or '.join(VERDICTS)}")
    return args


def state_topics(events_topic: str) -> list[str]:
    """The status / anomaly topics beside an events filter ``PREFIX/DEVICE/CAMERA/events``; none otherwise."""
    parts = events_topic.split("/")
    if len(parts) != 4 or parts[3] != "events" or "#" in events_topic:
        return []
    prefix, device, camera = parts[:3]
    return [f"{prefix}/{device}/status", f"{prefix}/{device}/{camera}/status", f"{prefix}/{device}/{camera}/anomaly"]


def make_client(args: argparse.Namespace) -> mqtt.Client:
    """An MQTT 5 client with the credentials and TLS the flags give (not yet connected)."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=args.client_id, protocol=mqtt.MQTTv5)
    if args.username:
        client.username_pw_set(args.username, os.environ.get(args.password_env or "", None))
    if urlsplit(args.broker).scheme == "mqtts":
        client.tls_set(ca_certs=str(args.ca) if args.ca else None)
    return client


def connect(client: mqtt.Client, broker: str, **kwargs: Any) -> bool:
    url = urlsplit(broker)
    try:
        client.connect(url.hostname or "", url.port or (8883 if url.scheme == "mqtts" else 1883), **kwargs)
    except OSError as exc:
        print(f"error: cannot connect to {broker}: {exc}", file=sys.stderr)
        return False
    return True


def send_verdict(args: argparse.Namespace) -> int:
    """Publish one verdict at QoS 1 and wait for the broker's PUBACK; 1 when it is refused or never acknowledged."""
    device, event_id, verdict = args.verdict
    message: dict[str, Any] = {"schema_version": 1, "event_id": event_id, "device_id": device, "verdict": verdict,
                               "judged_at": datetime.now(timezone.utc).isoformat(timespec="seconds")
                               .replace("+00:00", "Z")}
    message.update({k: v for k, v in (("judged_by", args.judged_by), ("note", args.note)) if v})
    if not args.no_validate:
        try:
            load_validator(FEEDBACK_SCHEMA).validate(message)
        except Exception as exc:  # jsonschema's ValidationError: one line naming what is wrong
            print(f"error: the verdict is not valid: {getattr(exc, 'message', exc)}", file=sys.stderr)
            return 2
    topic = f"{args.prefix}/{device}/feedback"
    client = make_client(args)
    acked: dict[str, Any] = {}
    done = threading.Event()
    client.on_publish = lambda c, u, mid, reason, props: (acked.update(reason=reason), done.set())
    if not connect(client, args.broker):
        return 1
    client.loop_start()
    try:
        client.publish(topic, json.dumps(message, separators=(",", ":")), qos=1)
        if not done.wait(30):
            print(f"error: no acknowledgement from {args.broker} for {topic} within 30 s", file=sys.stderr)
            return 1
    finally:
        client.disconnect()
        client.loop_stop()
    reason = acked.get("reason")
    if reason is not None and reason.is_failure:
        print(f"error: the broker refused the verdict on {topic}: {reason} (check its ACL)", file=sys.stderr)
        return 1
    print(f"sent {verdict} for {event_id} to {topic}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.verdict:
        return send_verdict(args)
    validator = None if args.no_validate else load_validator(args.schema)
    seen: MemorySeen | SqliteSeen = SqliteSeen(args.store) if args.store else MemorySeen()
    consumer = Consumer(args, seen, validator)
    topic = f"$share/{args.share}/{args.topic}" if args.share else args.topic
    # State topics are never shared: every member of a group wants availability, and a shared
    # subscription gets no retained messages.
    states = [] if args.no_status else state_topics(args.topic)
    persistent = bool(args.client_id)
    client = make_client(args)

    def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            print(f"broker refused the connection: {reason}", file=sys.stderr, flush=True)
            return
        # Again after every reconnect (a clean session forgets subscriptions; in a kept one it is a no-op).
        c.subscribe([(topic, 1), *((state, 1) for state in states)])

    def on_subscribe(c: mqtt.Client, userdata: Any, mid: int, reasons: list[Any], properties: Any) -> None:
        if any(r.is_failure for r in reasons):
            print(f"subscription to {topic} refused: {reasons[0]}", file=sys.stderr, flush=True)
        else:
            print(f"subscribed to {', '.join([topic, *states])}", file=sys.stderr, flush=True)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("/events"):
            consumer.handle(msg.topic, msg.payload)
        else:
            consumer.handle_state(msg.topic, msg.payload, bool(msg.retain))

    client.on_message = on_message
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: consumer.done.set())
    properties = None
    if persistent:
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = args.session_expiry
    if not connect(client, args.broker, clean_start=not persistent, properties=properties):
        return 1
    client.loop_start()
    try:
        while not consumer.done.wait(0.5):
            pass
    finally:
        client.disconnect()
        client.loop_stop()
        seen.close()
        print(consumer.summary(), file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
