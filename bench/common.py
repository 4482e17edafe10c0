"""What every benchmark shares: the machine it ran on, settings, timing, daemon runs, tables and JSON.

A figure without its machine is not a figure, so every table header and every JSON file names the
CPU, core count, Python and runtime versions. Timings on a shared 2-core machine are noisy, so a
timing is always the median of several repeats, and most figures are ratios to a baseline measured
in the same run (the noise mostly cancels in a ratio).
"""

from __future__ import annotations

import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from testbed.broker import Broker
from testbed.daemon import launch, write_config

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "bench" / "results"
CACHE = RESULTS / ".cache"  # generated streams and converted bundles; never committed
DAEMON_TIMEOUT_S = 600.0  # a daemon still running then is stopped (SIGTERM) and measured as it is
# Where the second runtime lives: CI's .venv-tflite, this machine's /work/venv-tfl.
TFLITE_PYTHONS = (ROOT / ".venv-tflite" / "bin" / "python", Path("/work/venv-tfl/bin/python"))
LOG_TS = re.compile(r"^ts=(\S+) level=\S+ logger=\S+ msg=(.*)$")


@dataclass
class Settings:
    quick: bool
    model: Path | None  # a trained RUN_DIR/model.keras (its run.json names the held-out clips)
    data: Path | None  # folder-per-class clips the streams are built from
    work: Path  # cache for streams and bundles
    bundle: str = "builtin"  # the bundle the daemon benchmarks run: a built-in name or a path
    log: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))

    def pick(self, quick: Any, full: Any) -> Any:
        return quick if self.quick else full


@dataclass
class Table:
    """One result table: rows of plain values, printed aligned and written as JSON."""

    name: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # figures that are not rows (baselines, settings)

    def render(self) -> str:
        cells = [[_cell(row.get(c)) for c in self.columns] for row in self.rows]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(self.columns)]
        lines = [f"## {self.title}", "  ".join(c.ljust(w) for c, w in zip(self.columns, widths, strict=True))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "columns": self.columns, "rows": self.rows,
                "notes": self.notes, **self.extra}


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def tflite_python() -> Path | None:
    """The interpreter with tflite-runtime: $RCLSTM_TFLITE_PYTHON, else a known venv if present."""
    env = os.environ.get("RCLSTM_TFLITE_PYTHON")
    if env:
        return Path(env)
    return next((p for p in TFLITE_PYTHONS if p.exists()), None)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine() -> dict[str, Any]:
    """The CPU, cores and software every figure came from."""
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    except OSError:
        lscpu = ""
    fields = dict(line.split(":", 1) for line in lscpu.splitlines() if ":" in line)
    other = tflite_python()
    tflite = None
    if other is not None and other.exists():
        done = subprocess.run([str(other), "-c", "from importlib import metadata; print(metadata.version("
                               "'tflite-runtime'), metadata.version('opencv-python-headless'))"],
                              capture_output=True, text=True, check=False)
        tflite = done.stdout.split() or None
    return {
        "cpu": fields.get("Model name", platform.processor() or "unknown").strip(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "ai_edge_litert": _version("ai-edge-litert"),
        "tflite_runtime": tflite[0] if tflite else None,
        "tflite_env_opencv": tflite[1] if tflite and len(tflite) > 1 else None,
        "tensorflow": _version("tensorflow-cpu") or _version("tensorflow"),
        "opencv": _version("opencv-python-headless") or _version("opencv-python"),
        "numpy": _version("numpy"),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "note": "x86 figures from a shared machine; see BENCHMARKS.md for what a Raspberry Pi changes",
    }


def machine_line(info: dict[str, Any]) -> str:
    return (f"machine: {info['cpu']} ({info['arch']}, {info['cores']} cores), Python {info['python']}, "
            f"ai-edge-litert {info['ai_edge_litert']}, tflite-runtime {info['tflite_runtime']}, "
            f"TensorFlow {info['tensorflow']}, OpenCV {info['opencv']}")


def seconds_per_call(fn: Callable[[], object], calls: int, repeats: int) -> float:
    """Median over ``repeats`` of the mean wall time of ``calls`` calls (one warm-up call first)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - start) / calls)
    return statistics.median(times)


def log_times(stderr: str, message: str) -> list[datetime]:
    """Wall times of the daemon's log lines whose message starts with ``message``."""
    found = []
    for line in stderr.splitlines():
        match = LOG_TS.match(line)
        if match and match.group(2).lstrip('"').startswith(message):
            found.append(datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc))
    return found


@dataclass(frozen=True)
class Peak:
    """A process's peak resident memory, and what it was made of at the highest sample taken.

    Anonymous pages (heap, Python objects, decoder frames, stacks) are what the process needs;
    file pages are the code and data of the libraries it maps, clean, shared with any other
    process using them and dropped by the kernel under pressure. The kernel's VmHWM alone cannot
    tell the two apart.
    """

    rss_mb: float  # VmHWM
    anon_mb: float  # RssAnon at the sample where VmRSS was highest
    file_mb: float  # RssFile + RssShmem at that sample


@dataclass
class DaemonRun:
    """One daemon process that finished cleanly: CPU and peak memory from the kernel, and its logs."""

    cpu_s: float
    peak: Peak
    wall_s: float
    started: datetime  # wall clock just before the process was created
    stderr: str

    @property
    def max_rss_mb(self) -> float:
        return self.peak.rss_mb

    def since_start(self, message: str) -> float | None:
        times = log_times(self.stderr, message)
        return (times[0] - self.started).total_seconds() if times else None

    def between(self, first: str, last: str) -> float | None:
        a, b = log_times(self.stderr, first), log_times(self.stderr, last)
        return (b[-1] - a[0]).total_seconds() if a and b else None


def run_daemon(work: Path, cameras: list[dict[str, Any]], bundle: Path, *, broker: Broker | None = None,
               python: Path | str = sys.executable, runtime: str = "auto",
               on_started: Callable[[Any], None] | None = None) -> DaemonRun:
    """`python -m edge run` on ``cameras`` until every file ends; CPU from wait4, peak RSS sampled from /proc.

    A daemon that exits non-zero makes every figure from it meaningless, so that raises here.
    """
    work.mkdir(parents=True, exist_ok=True)
    config = write_config(work, cameras, broker, model={"bundle": str(bundle), "num_threads": 1, "runtime": runtime})
    started = datetime.now(timezone.utc)
    t0 = time.monotonic()
    daemon = launch(config, work, python=python)
    if on_started is not None:
        on_started(daemon)
    cpu_s, peak = _measured(daemon.proc, t0 + DAEMON_TIMEOUT_S)
    if daemon.proc.returncode != 0:
        raise RuntimeError(f"daemon ({runtime}) exited with {daemon.proc.returncode}: {daemon.stderr[-500:]}")
    return DaemonRun(cpu_s=cpu_s, peak=peak, wall_s=time.monotonic() - t0, started=started, stderr=daemon.stderr)


def _measured(proc: subprocess.Popen[bytes], deadline: float) -> tuple[float, Peak]:
    """Wait for a child (SIGTERM at ``deadline``); its CPU seconds, all threads, from wait4, and its peak memory."""
    hwm_kb, top = 0, (0, 0, 0)  # top: (VmRSS, RssAnon, file kB) of the highest sample
    while True:
        sample = _memory_kb(proc.pid)
        hwm_kb = max(hwm_kb, sample.get("VmHWM", 0))
        rss = sample.get("VmRSS", 0)
        if rss > top[0]:
            top = (rss, sample.get("RssAnon", 0), sample.get("RssFile", 0) + sample.get("RssShmem", 0))
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.send_signal(signal.SIGTERM)
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime, Peak(rss_mb=hwm_kb / 1024, anon_mb=top[1] / 1024, file_mb=top[2] / 1024)


def _memory_kb(pid: int) -> dict[str, int]:
    """The process's memory lines from /proc (kB); empty once it has gone.

    The peak is the process's own VmHWM, not ru_maxrss: Linux carries the parent's peak across
    fork+exec, so a daemon started from a benchmark process that has TensorFlow loaded would report
    TensorFlow's size.
    """
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(Vm\w+|Rss\w+):\s+(\d+) kB", status, re.MULTILINE)}


def child_usage(argv: list[str]) -> tuple[float, float]:
    """Run a command to the end; (CPU seconds, peak RSS in MB) of that child alone."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    cpu_s, peak = _measured(proc, time.monotonic() + DAEMON_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {proc.returncode}")
    return cpu_s, peak.rss_mb


def write_results(path: Path, info: dict[str, Any], tables: list[Table], settings: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {"machine": info, "settings": settings, "tables": {t.name: t.as_json() for t in tables}}
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")
