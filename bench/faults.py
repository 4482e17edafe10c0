"""Issue 12's ten cases re-run as the issue describes them, one table row each (the closing table).

    python -m bench.faults            # prints the table, writes bench/results/faults.json

Not a test: it asserts nothing and prints what happened. Real components throughout: a tmpfs with size
and inode limits (needs root; rows say "skipped" otherwise), a real mosquitto with a persistent QoS 1
consumer counting distinct event ids, real daemons (``python -m edge run``), real SQLite files damaged
on disk and real encoded video. "sent" is what the daemon accepted (its one log line per stored event,
or the messages written to an outbox), "received" the distinct ones the consumer got, "lost" the
difference, "said" what the log said was lost. RSS is the daemon's peak (VmHWM) where one ran.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import RESULTS, ROOT, Table, machine, machine_line, write_results
from edge.synthetic import write_stream
from testbed.broker import Broker, Subscriber, free_port
from testbed.daemon import DEVICE, EAGER, camera, launch, received, write_config
from testbed.faults import (
    checkpointed_outbox,
    damaged_mp4,
    fill_inodes,
    fill_space,
    free,
    pattern_video,
    peak_rss_mb,
    tmpfs,
    unclean_wal,
)

EVENTS = f"rclstm/{DEVICE}/+/events"
COLUMNS = ["case", "what was done", "sent", "received", "lost", "said lost", "rss_mb", "result"]
Row = dict[str, Any]


@contextlib.contextmanager
def errors_logged() -> Iterator[list[str]]:
    """The error lines the daemon's modules log in this process, while the block runs."""
    lines: list[str] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = lambda record: lines.append(record.getMessage())  # type: ignore[method-assign]
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lines
    finally:
        root.removeHandler(handler)


def _broker(work: Path) -> Broker:
    broker = Broker(workdir=work / f"broker-{uuid.uuid4().hex[:6]}", port=free_port(), persistence=True)
    broker.workdir.mkdir(parents=True)
    broker.start()
    return broker


class Skipped(Exception):
    """A case this machine cannot run (no tmpfs without root); its row says why."""


@contextlib.contextmanager
def _tmpfs_and_consumer(work: Path, name: str, topic: str = EVENTS) -> Iterator[tuple[Path, Broker, Subscriber]]:
    """A small tmpfs, a broker with persistence and a persistent QoS 1 consumer of ``topic``."""
    with tmpfs(work / f"{name}fs") as mnt:
        if mnt is None:
            raise Skipped("no tmpfs (needs root)")
        broker = _broker(work)
        sub = Subscriber(broker, topic, persistent_id=f"{name}-consumer")
        try:
            yield mnt, broker, sub
        finally:
            sub.close()
            broker.stop()


def _fights(work: Path) -> Path:
    path = work / "fights.mp4"
    if not path.exists():
        write_stream(path, [("calm", 2.0), ("fight", 3.0)], fps=25)
    return path


def _counts(sent: list[Any], got: list[Any]) -> Row:
    return {"sent": len(set(sent)), "received": len(set(got) & set(sent)), "lost": len(set(sent) - set(got))}


def _edge(*args: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300, env=env if env is not None else dict(os.environ))


def _check(work: Path, toml: str, env: dict | None = None) -> subprocess.CompletedProcess[str]:
    config = work / f"check-{uuid.uuid4().hex[:6]}.toml"
    config.write_text(toml)
    return _edge("check", "--config", str(config), env=env)


def _clean(done: subprocess.CompletedProcess[str]) -> bool:
    return "Traceback" not in done.stdout + done.stderr


def case_1(work: Path) -> Row:
    """Queued events in an outbox that cannot be opened for lack of inodes: kept, sent once it opens."""
    with _tmpfs_and_consumer(work, "c1") as (mnt, broker, sub):
        broker.stop()
        config = write_config(mnt, [camera(str(_fights(work)), realtime=False)], broker, decision=EAGER,
                              outbox={"flush_timeout_s": 1.0, "open_retry_s": 120.0})
        first = launch(config, work, name="c1-first")
        first.proc.wait(300)
        fillers = fill_inodes(mnt)
        broker.start()
        second = launch(config, work, name="c1-second")
        said_retry = second.wait_log("not corruption, the file is kept", 60)
        free(fillers)
        rss = peak_rss_mb(second.proc)
        sent = first.sent() + second.sent()
        sub.wait_for(lambda _: set(sent) <= set(received(sub)), timeout=60)
        corrupt = list((mnt / "state").glob("*corrupt*"))
        return {**_counts(sent, received(sub)), "said lost": 0, "rss_mb": rss,
                "what was done": f"{len(first.sent())} events queued with the broker down; inodes exhausted; restart",
                "result": f"open retried ({'said once' if said_retry else 'NOT said'}), {len(corrupt)} file(s) set "
                          f"aside, exit {second.proc.returncode}, queued events sent once inodes returned"}


def case_2(work: Path) -> Row:
    """Full disk at first start: one line and exit 1 per start, nothing renamed; detection once space returns."""
    with _tmpfs_and_consumer(work, "c2") as (mnt, broker, sub):
        (work / "c2").mkdir()
        config = write_config(work / "c2", [camera(str(_fights(work)), realtime=False)], broker, decision=EAGER,
                              state_dir=str(mnt / "state"), outbox={"flush_timeout_s": 5.0, "open_retry_s": 1.0})
        (mnt / "state").mkdir()  # as install creates it; full before the outbox's first byte
        filler, fillers = fill_space(mnt), fill_inodes(mnt)
        starts = []
        for i in range(2):  # systemd restarting it
            starts.append(launch(config, work, name=f"c2-full-{i}"))
            starts[-1].proc.wait(120)
        codes = [s.proc.returncode for s in starts]
        tracebacks = sum("Traceback" in s.stderr for s in starts)
        free(fillers, filler)
        after = launch(config, work, name="c2-after")
        rss = peak_rss_mb(after.proc)
        sub.wait_for(lambda _: set(after.sent()) <= set(received(sub)), timeout=60)
        corrupt = list((mnt / "state").glob("*corrupt*"))
        return {**_counts(after.sent(), received(sub)), "said lost": 0, "rss_mb": rss,
                "what was done": "2 starts on a full tmpfs (space and inodes), then one with space",
                "result": f"exit codes {codes}, {tracebacks} traceback(s), {len(corrupt)} file(s) set aside; "
                          f"then exit {after.proc.returncode}, detecting"}


def _drain(path: Path, broker: Broker, damage: Callable[[], None]) -> tuple[int, list[str], Any]:
    """Damage an outbox, open it, publish everything it hands out to the broker: (distinct received, error
    lines, the outbox)."""
    from edge.adapters.mqtt import Publisher
    from edge.adapters.outbox import Outbox
    from edge.core.config import validate_config

    sub = Subscriber(broker, "cam/events")
    damage()
    with errors_logged() as lines:
        box = Outbox(path)
        publisher = Publisher(validate_config({"device_id": "d", "mqtt": {"url": broker.url}}).mqtt, "d", box, None)
        publisher.start()
        publisher.flush(60)
        sub.wait_for(lambda messages: len({bytes(m.payload) for m in messages}) >= publisher.acked, timeout=30)
        publisher.stop()
        box.close()
    got = {bytes(m.payload) for m in sub.messages}
    sub.close()
    return len(got), lines, box


def _said(lines: list[str]) -> str:
    """The first error line the case produced, shortened for the table."""
    if not lines:
        return "NOTHING SAID"
    line = re.sub(r"^outbox /\S+?:? ", "", lines[0])  # the temporary path says nothing here
    return line if len(line) <= 160 else line[:160] + "..."


def case_3(work: Path) -> list[Row]:
    """SIGKILL then a deleted, cut or garbled -wal; a corrupt checkpointed file; one flipped bit in a payload."""
    broker = _broker(work)
    rows = []

    def wal_case(name: str, damage: Callable[[Path], None]) -> Row:
        path = work / f"c3-{name.replace(' ', '-')}" / "outbox.db"
        path.parent.mkdir()
        wal = unclean_wal(path, 30)
        got, lines, box = _drain(path, broker, lambda: damage(wal))
        return {"case": f"3 ({name})", "sent": 30, "received": got, "lost": 30 - got, "said lost": box.lost,
                "what was done": f"30 events only in the -wal (process ended like SIGKILL); -wal {name}",
                "result": _said(lines)}

    def cut(wal: Path) -> None:
        data = wal.read_bytes()
        frame = 24 + int.from_bytes(data[8:12], "big")
        wal.write_bytes(data[:32 + ((len(data) - 32) // frame // 2) * frame])

    def garble(wal: Path) -> None:
        data = bytearray(wal.read_bytes())
        data[len(data) // 2] ^= 0xFF
        wal.write_bytes(bytes(data))

    rows.append(wal_case("deleted", lambda wal: wal.unlink()))
    rows.append(wal_case("cut at a frame", cut))
    rows.append(wal_case("garbled", garble))

    path = work / "c3-corrupt" / "outbox.db"
    path.parent.mkdir()
    payloads = checkpointed_outbox(path, 173)

    def corrupt() -> None:
        with contextlib.closing(sqlite3.connect(path)) as db:
            (page,) = db.execute("PRAGMA page_size").fetchone()
        data = bytearray(path.read_bytes())
        middle = len(data) // page // 2
        data[middle * page:(middle + 1) * page] = os.urandom(page)
        path.write_bytes(bytes(data))

    got, lines, box = _drain(path, broker, corrupt)
    rows.append({"case": "3 (corrupt file)", "sent": len(payloads), "received": got, "lost": len(payloads) - got,
                 "said lost": box.lost, "what was done": "173 checkpointed events; one page of the file garbled",
                 "result": _said(lines)})

    path = work / "c3-bitflip" / "outbox.db"
    path.parent.mkdir()
    payloads = checkpointed_outbox(path, 5, size=50)

    def flip() -> None:
        data = bytearray(path.read_bytes())
        data[data.index(b"event 0003 ") + 8] ^= 0x01
        path.write_bytes(bytes(data))

    got, lines, box = _drain(path, broker, flip)
    rows.append({"case": "3 (bit flip)", "sent": len(payloads), "received": got, "lost": len(payloads) - got,
                 "said lost": box.quarantined, "what was done": "5 events; one bit of one payload flipped on disk",
                 "result": f"{box.quarantined} quarantined, never published: {_said(lines)}"})
    broker.stop()
    return rows


def case_4(work: Path) -> Row:
    """A clean stop on a full disk with the broker away: the log says how many are kept and how many lost."""
    from edge.core.config import validate_config
    from edge.sinks.mqtt import MqttSink

    with _tmpfs_and_consumer(work, "c4", "rclstm/d/cam/events") as (mnt, broker, sub):
        broker.stop()
        config = validate_config({"device_id": "d", "state_dir": str(mnt / "state"), "mqtt": {"url": broker.url}})
        sink = MqttSink(config)
        sink.open([], "model 1")
        filler = fill_space(mnt)
        os.truncate(filler, filler.stat().st_size - 300_000)  # room for about a dozen of these events
        ids = [str(uuid.uuid4()) for _ in range(25)]
        for event_id in ids:
            sink._queue("rclstm/d/cam/events", json.dumps({"event_id": event_id}).encode() + b" " * 20_000)
        with errors_logged() as lines:
            sink.close(0.5)
        said = re.search(r"; (\d+) message\(s\) that could not be written", " ".join(lines))
        kept = re.search(r"(\d+) message\(s\) kept on disk", " ".join(lines))
        free([], filler)
        broker.start()
        again = MqttSink(config)
        again.open([], "model 1")
        sub.wait_for(lambda messages: len(messages) >= (int(kept.group(1)) if kept else 0), timeout=60)
        again.close(5.0)
        got = {json.loads(m.payload)["event_id"] for m in sub.messages}
        return {**_counts(ids, list(got)), "said lost": int(said.group(1)) if said else 0,
                "what was done": "25 events of 20 kB, room for ~12, broker down, clean stop; restart with space",
                "result": "kept ones sent after the restart; the log named the rest"}


def case_5(work: Path) -> Row:
    """A damaged MP4: FFmpeg's lines go through the logger, bounded, in logfmt."""
    video = damaged_mp4(work / "damaged.mp4")
    (work / "c5").mkdir()
    daemon = launch(write_config(work / "c5", [camera(str(video), realtime=False)], decision=EAGER), work,
                    name="c5")
    rss = peak_rss_mb(daemon.proc)
    lines = daemon.stderr.splitlines()
    ffmpeg = [line for line in lines if "logger=ffmpeg" in line]
    suppressed = sum(int(line.rsplit("suppressed=", 1)[1]) for line in ffmpeg if " suppressed=" in line)
    events = [line for line in daemon.stdout.splitlines() if line.startswith("{")]
    # A calm clip: the events are not this case's point, what reaches stderr is.
    return {"sent": len(events), "received": None, "lost": None, "said lost": None, "rss_mb": rss,
            "what was done": "run on a 20 s MP4 garbled every 101 bytes (events on stdout)",
            "result": f"exit {daemon.proc.returncode}; {len(lines)} stderr lines, "
                      f"{sum(not line.startswith('ts=') for line in lines)} not logfmt; "
                      f"{len(ffmpeg)} logger=ffmpeg lines, {suppressed} more counted, not printed"}


def case_6(work: Path) -> Row:
    configs = ['[[cameras]]\nid = "c"\nsource = 2147483648\n', '[[cameras]]\nid = "c"\nsource = true\n',
               f'[mqtt]\nurl = "mqtt://h:1883"\nprefix = "{"p" * 70_000}"\n', '[mqtt]\nurl = "mqtt://h:0"\n']
    done = [_check(work, toml) for toml in configs]
    one_line = sum(len([x for x in d.stdout.splitlines() if x.startswith("FAIL")]) == 1 for d in done)
    return {"what was done": "check: camera index 2^31, source = true, a 70 000-character prefix, mqtt://h:0",
            "result": f"exit codes {[d.returncode for d in done]}, {one_line}/4 one FAIL line naming the key, "
                      f"{sum(not _clean(d) for d in done)} traceback(s)"}


def case_7(work: Path) -> Row:
    bad = b"\xff\xfepass\x80"
    secret = work / "password"
    secret.write_bytes(bad)
    base = '[mqtt]\nurl = "mqtt://127.0.0.1:9"\nusername = "u"\n'
    camera_toml = '[[cameras]]\nid = "c"\nsource = "/nonexistent.mp4"\n'
    env: dict = {k.encode(): v.encode() for k, v in os.environ.items() if k != "RCLSTM_MQTT_PASSWORD"}
    creds = work / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_bytes(bad)
    done = [_check(work, base + f'password_file = "{secret}"\n' + camera_toml),
            _check(work, base + camera_toml, env={**env, b"RCLSTM_MQTT_PASSWORD": bad}),
            _check(work, base + camera_toml, env={**env, b"CREDENTIALS_DIRECTORY": str(creds).encode()})]
    said = sum("password is not UTF-8" in d.stdout for d in done)
    return {"what was done": "check with a non-UTF-8 password from password_file, $RCLSTM_MQTT_PASSWORD, credential",
            "result": f"{said}/3 one line 'the password is not UTF-8', {sum(not _clean(d) for d in done)} traceback(s)"}


def case_8(work: Path) -> Row:
    from edge.provision.install import InstallOptions, install

    check = _check(work, '[[cameras]]\nid = "door"\nsource = "rtsp://viewer:SECRET@127.0.0.1:9/s"\n'
                         'open_timeout_s = 2\n')
    bad_url = _check(work, '[mqtt]\nurl = "mqtt://user:SECRET@h:0"\n')
    root = work / "c8-root"
    install(InstallOptions(device_id="pi", site="s", cameras=["door=rtsp://viewer:SECRET@10.0.0.5/stream"],
                           broker="mqtts://broker.example:8883", username="pi", password="mqtt-pass", root=root,
                           create_venv=False))
    config = root / "etc/rclstm-edge/config.toml"
    leaks = sum("SECRET" in d.stdout + d.stderr for d in (check, bad_url))
    return {"what was done": "check of a camera URL with a password; a config error in a URL with one; install",
            "result": f"{leaks} output(s) with the password; installed config mode "
                      f"{oct(stat.S_IMODE(config.stat().st_mode))}, MQTT password in it: "
                      f"{'yes' if 'mqtt-pass' in config.read_text() else 'no'}"}


def case_9(work: Path) -> Row:
    limit = re.search(r"^MemoryMax=(\d+)M$", (ROOT / "systemd" / "rclstm-edge.service").read_text(), re.M)
    video = pattern_video(work / "4k.mp4", 3840, 2160)
    (work / "c9").mkdir()
    config = write_config(work / "c9", [camera(str(video), f"c{i}", loop=True) for i in range(4)])
    daemon = launch(config, work, name="c9")
    rss = peak_rss_mb(daemon.proc, seconds=15.0)
    daemon.stop()
    return {"rss_mb": rss, "what was done": "4 cameras looping a 4K file in real time for 15 s",
            "result": f"peak RSS {rss:.0f} MB vs the unit's MemoryMax {limit.group(1) if limit else '?'} MB"}


def case_10(work: Path) -> Row:
    from edge.adapters.mqtt import check_broker
    from edge.core.config import validate_config

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    held: list[Any] = []  # the accepted connection stays open and silent
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()
    cfg = validate_config({"mqtt": {"url": f"mqtt://127.0.0.1:{server.getsockname()[1]}", "keepalive_s": 5}}).mqtt
    _, silent = check_broker(cfg, "d", None, timeout=5.0)
    server.close()
    directory = _check(work, f'[[cameras]]\nid = "c"\nkind = "file"\nsource = "{work}"\n')
    bundle = work / "c10-bundle"
    subprocess.run(["cp", "-r", str(ROOT / "edge/models/demo-synth"), str(bundle)], check=True)
    (bundle / "manifest.json").unlink()
    (bundle / "manifest.json").symlink_to("/dev/zero")
    zero = _check(work, f'[model]\nbundle = "{bundle}"\n[[cameras]]\nid = "c"\nsource = "/nonexistent.mp4"\n')
    state = work / "c10-state"
    run = subprocess.run([sys.executable, "-c", "import os, sys; os.umask(0o022); from edge.app.cli import main; "
                          "sys.exit(main(sys.argv[1:]))", "run", "--source", str(_fights(work)), "--fast",
                          "--state-dir", str(state), "--broker", "mqtt://127.0.0.1:9"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "RCLSTM_MQTT_PASSWORD": ""})
    modes = sorted({oct(stat.S_IMODE(p.stat().st_mode)) for p in [state, *state.iterdir()]})
    return {"what was done": "a silent broker; a directory as a file source; manifest -> /dev/zero; files' modes",
            "result": f"silent: 'TLS port' {'IN' if 'TLS port' in silent else 'not in'} the reason; directory: "
                      f"{'is a directory' in directory.stdout}; /dev/zero: check finished {zero.returncode} "
                      f"{'not a regular file' in zero.stdout}; state files {modes} (exit {run.returncode})"}


CASES: list[tuple[str, Callable[[Path], Row | list[Row]]]] = [
    ("1", case_1), ("2", case_2), ("3", case_3), ("4", case_4), ("5", case_5), ("6", case_6), ("7", case_7),
    ("8", case_8), ("9", case_9), ("10", case_10),
]


def main() -> int:
    only = set(sys.argv[1:])
    table = Table("faults", "Issue 12: each case re-run (events sent / received / lost, peak RSS)", COLUMNS)
    info = machine()
    with tempfile.TemporaryDirectory(prefix="rclstm-faults-") as tmp:
        for name, run in CASES:
            if only and name not in only:
                continue
            work = Path(tmp) / f"case{name}"
            work.mkdir()
            print(f"case {name}...", file=sys.stderr, flush=True)
            try:
                result = run(work)
            except Skipped as exc:
                result = {"result": f"skipped: {exc}"}
            except Exception as exc:  # a case that breaks is a row saying so; the others still run
                result = {"result": f"FAILED: {type(exc).__name__}: {exc}"}
            for row in result if isinstance(result, list) else [result]:
                table.rows.append({"case": name, **row})
    print(machine_line(info))
    print(table.render())
    write_results(RESULTS / "faults.json", info, [table], {"cases": sorted(only) or "all"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
