"""Provisioning: `rclstm-edge install` / `uninstall` for installers setting up a store camera device.

One command creates the service user, the directories, a virtual environment under /opt, the
config file, root-only credential files and the systemd unit, then runs `check`. It is idempotent:
every file is written only when its content or mode differs, so a second run with the same flags
changes nothing and a run with one flag changed changes one file. ``--root DIR`` installs into a
directory tree instead of the live system (no user, no systemctl), which is how the tests run it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edge.core.config import ConfigError, parse_source, tomllib, validate_config
from edge.core.errors import UsageError

USER = "rclstm-edge"
UNIT_NAME = "rclstm-edge.service"
ETC = Path("etc/rclstm-edge")
CREDENTIALS = ETC / "credentials"
STATE = Path("var/lib/rclstm-edge")
OPT = Path("opt/rclstm-edge")
UNIT_PATH = Path("etc/systemd/system") / UNIT_NAME
CREDENTIAL_NAMES = ("mqtt-password", "mqtt-key")
CONFIG_MODE = 0o640


class InstallError(UsageError):
    """A provisioning step that cannot proceed; one line naming what and how to fix it."""


@dataclass
class InstallOptions:
    device_id: str
    site: str
    cameras: list[str]
    broker: str | None = None
    username: str | None = None
    password: str | None = None
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    model: str = "builtin"
    root: Path = Path("/")
    package: str | None = None
    runtime: str = "litert"
    create_venv: bool = True


@dataclass
class Report:
    """What a run changed, so a second identical run can be seen to change nothing."""

    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # How to take back this run's changes, newest last: ("remove", path) for what it created,
    # ("restore", path, content, mode) for a file it replaced, ("userdel", name).
    journal: list[tuple] = field(default_factory=list)

    def record(self, path: Path, changed: bool) -> None:
        (self.changed if changed else self.unchanged).append(str(path))

    def undo(self) -> list[str]:
        """Take back this run's changes, newest first; returns what could not be undone."""
        left = []
        for step in reversed(self.journal):
            try:
                if step[0] == "remove":
                    path = step[1]
                    if path.is_dir() and not path.is_symlink():
                        shutil.rmtree(path)
                    elif path.exists() or path.is_symlink():
                        path.unlink()
                elif step[0] == "restore":
                    _, path, content, mode = step
                    path.write_bytes(content)
                    path.chmod(mode)
                elif step[0] == "userdel":
                    subprocess.run(["userdel", step[1]], check=True, capture_output=True)
            except (OSError, subprocess.CalledProcessError):
                left.append(str(step[1]))
        self.journal.clear()
        return left


def parse_camera(spec: str, index: int) -> dict[str, str | int]:
    """``ID=SOURCE`` or just ``SOURCE`` (then named cam0, cam1, ...)."""
    camera_id, sep, source = spec.partition("=")
    if not sep or "://" in camera_id or camera_id.startswith("/"):
        camera_id, source = f"cam{index}", spec
    value = parse_source(source)
    return {"id": camera_id, "source": value}


def render_config(opts: InstallOptions) -> str:
    """The config file the flags describe. Secrets never go in it; they are credential files."""
    lines = [
        "# Written by `rclstm-edge install`; edit and run `rclstm-edge check --config` after changes.",
        "# MQTT secrets are not here: they are systemd credentials under /etc/rclstm-edge/credentials.",
        "# A camera URL may hold the camera's password, so this file is readable by root and the",
        "# rclstm-edge group only (0640); keep it so.",
        f"device_id = {_toml(opts.device_id)}",
        f"site = {_toml(opts.site)}",
        'state_dir = "/var/lib/rclstm-edge"',
        "",
        "[model]",
        f"bundle = {_toml(opts.model)}",
        "",
        "[mqtt]",
    ]
    if opts.broker:
        lines.append(f"url = {_toml(opts.broker)}")
    if opts.username:
        lines.append(f"username = {_toml(opts.username)}")
    if opts.ca:
        lines.append(f"ca_file = {_toml('/' + str(ETC / 'ca.crt'))}")
    if opts.cert:
        lines.append(f"cert_file = {_toml('/' + str(ETC / 'client.crt'))}")
    for index, spec in enumerate(opts.cameras):
        camera = parse_camera(spec, index)
        lines += ["", "[[cameras]]", f"id = {_toml(camera['id'])}", f"source = {_toml(camera['source'])}"]
    return "\n".join(lines) + "\n"


def _toml(value: str | int) -> str:
    # A JSON string literal is a valid TOML basic string; integers are the same in both.
    return json.dumps(value)


def _write(path: Path, content: bytes, mode: int, report: Report) -> None:
    """Write only when content or mode differs, so re-running changes nothing that did not change."""
    same = path.is_file() and path.read_bytes() == content and (path.stat().st_mode & 0o7777) == mode
    if not same:
        _mkdir_journaled(path.parent, report)
        if path.is_file():
            report.journal.append(("restore", path, path.read_bytes(), path.stat().st_mode & 0o7777))
        else:
            report.journal.append(("remove", path))
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(content)
        tmp.chmod(mode)
        os.replace(tmp, path)
    report.record(path, not same)


def _mkdir_journaled(path: Path, report: Report) -> None:
    """``mkdir -p``, journaling each directory it creates so a failed run can remove them."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    report.journal += [("remove", p) for p in reversed(missing)]


def _mkdir(path: Path, mode: int, report: Report) -> None:
    existed = path.is_dir()
    _mkdir_journaled(path, report)
    changed = not existed or (path.stat().st_mode & 0o7777) != mode
    path.chmod(mode)
    report.record(path, changed)


def unit_text() -> bytes:
    return resources.files("edge.provision").joinpath("unit", UNIT_NAME).read_bytes()


def _live(root: Path) -> bool:
    """Whether this run changes the running system (users, systemctl) rather than a --root tree."""
    return root.resolve() == Path("/")


def validate(opts: InstallOptions) -> None:
    """Refuse bad flags before anything is written, with the same messages `check` would give."""
    if _live(opts.root) and os.geteuid() != 0:
        raise InstallError("install must run as root (sudo), or use --root DIR to install into a directory tree")
    if not opts.cameras:
        raise InstallError("--camera is required at least once (ID=rtsp://... or a /dev/video path)")
    for flag, path in (("--ca", opts.ca), ("--cert", opts.cert), ("--key", opts.key)):
        if path is not None and not path.is_file():
            raise InstallError(f"{flag} {path}: no such file")
    try:
        validate_config(tomllib.loads(render_config(opts)))
    except ConfigError as exc:
        raise InstallError("; ".join(exc.problems)) from None


def install(opts: InstallOptions) -> Report:
    """Provision, or on any failure take back what this run wrote and say so (InstallError)."""
    validate(opts)
    report = Report()
    try:
        return _install(opts, report)
    except (Exception, KeyboardInterrupt) as exc:
        reason = str(exc) if isinstance(exc, InstallError) else f"{type(exc).__name__}: {exc}"
        created = sum(step[0] == "remove" for step in report.journal)
        left = report.undo()
        if left:
            raise InstallError(f"{reason}. Install stopped; could not undo {', '.join(left)}: remove them by hand, "
                               "or run `rclstm-edge uninstall --purge`") from None
        raise InstallError(f"{reason}. Install stopped and took back what it had written ({created} new "
                           "path(s) removed, replaced files restored); nothing is left behind") from None


def _install(opts: InstallOptions, report: Report) -> Report:
    root = opts.root
    live = _live(opts.root)
    if live:
        _ensure_user(report)
    _mkdir(root / ETC, 0o755, report)
    _mkdir(root / CREDENTIALS, 0o700, report)
    _mkdir(root / STATE, 0o700, report)
    _mkdir(root / OPT, 0o755, report)
    # 0640 root:rclstm-edge: camera URLs may carry passwords, and the service (group rclstm-edge) must
    # read the file; docs/security.md says why not a credential per camera.
    _write(root / ETC / "config.toml", render_config(opts).encode(), CONFIG_MODE, report)
    if live:
        shutil.chown(root / ETC / "config.toml", "root", USER)
    secrets = {"mqtt-password": (opts.password or "").encode(), "mqtt-key": opts.key.read_bytes() if opts.key else b""}
    for name in CREDENTIAL_NAMES:
        _write(root / CREDENTIALS / name, secrets[name], 0o600, report)
    if opts.ca:
        _write(root / ETC / "ca.crt", opts.ca.read_bytes(), 0o644, report)
    if opts.cert:
        _write(root / ETC / "client.crt", opts.cert.read_bytes(), 0o644, report)
    _write(root / UNIT_PATH, unit_text(), 0o644, report)
    if opts.create_venv:
        _ensure_venv(root / OPT / "venv", opts, report)
    if live:
        shutil.chown(root / STATE, USER, USER)
        _systemctl(report, "daemon-reload")
        _systemctl(report, "enable", "--now", UNIT_NAME)
    else:
        report.notes.append("--root: user, ownership and systemctl skipped")
    return report


def _ensure_user(report: Report) -> None:
    if subprocess.run(["id", "-u", USER], capture_output=True).returncode == 0:
        report.unchanged.append(f"user {USER}")
        return
    subprocess.run(
        [
            "useradd",
            "--system",
            "--no-create-home",
            "--home-dir",
            "/var/lib/rclstm-edge",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
            "--groups",
            "video",
            USER,
        ],
        check=True,
    )
    report.changed.append(f"user {USER}")
    report.journal.append(("userdel", USER))


# The module each --runtime installs, probed in the venv so a re-run installs a missing runtime.
RUNTIME_MODULES = {"litert": "ai_edge_litert", "tflite": "tflite_runtime"}
WHEEL_HINT = ("rclstm-edge is not on a public index: build a wheel from the checkout (python -m pip wheel "
              "--no-deps -w dist .), copy it to the device and pass "
              "--package dist/rclstm_edge-VERSION-py3-none-any.whl")


def _ensure_venv(venv: Path, opts: InstallOptions, report: Report) -> None:
    """Create the venv and install this version of the package (with the chosen runtime) into it."""
    from edge import __version__

    python = venv / "bin" / "python"
    if python.exists():
        # This version and the chosen runtime: a venv without its runtime is repaired by re-running install.
        probe_code = f"import edge, {RUNTIME_MODULES[opts.runtime]}; print(edge.__version__)"
        probe = subprocess.run([str(python), "-c", probe_code], capture_output=True, text=True, env=_venv_env(),
                               cwd=venv)
        if probe.returncode == 0 and probe.stdout.strip() == __version__:
            report.unchanged.append(str(venv))
            return
    else:
        _mkdir_journaled(venv.parent, report)
        report.journal.append(("remove", venv))
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    spec = pip_spec(opts.package, opts.runtime)
    result = subprocess.run([str(python), "-m", "pip", "install", "-q", spec], capture_output=True, text=True,
                            env=_venv_env(), cwd=venv)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
        hint = f"; {WHEEL_HINT}" if not opts.package else ""
        raise InstallError(f"pip could not install {spec} into {venv}: {last}{hint}")
    report.changed.append(str(venv))


def _venv_env() -> dict[str, str]:
    """The venv sees only itself: an inherited PYTHONPATH (or a checkout as the working directory) would make
    pip and the probe find another copy of the package and skip the install."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def pip_spec(package: str | None, runtime: str) -> str:
    """What pip installs: a wheel file or a checkout directory with the runtime extra, a requirement as given,
    or by default this version with the runtime from the configured index."""
    from edge import __version__

    if package and Path(package).exists():
        return f"rclstm-edge[{runtime}] @ {Path(package).resolve().as_uri()}"
    return package or f"rclstm-edge[{runtime}]=={__version__}"


def _systemctl(report: Report, *args: str) -> None:
    if not Path("/run/systemd/system").is_dir():
        report.notes.append(f"systemd is not running: skipped systemctl {' '.join(args)}")
        return
    subprocess.run(["systemctl", *args], check=True)


def uninstall(root: Path = Path("/"), purge: bool = False) -> Report:
    """Remove the unit and the venv; keep config, credentials and the outbox unless ``purge``."""
    report = Report()
    live = _live(root)
    if live and os.geteuid() != 0:
        raise InstallError("uninstall must run as root (sudo), or use --root DIR")
    if live:
        _systemctl(report, "disable", "--now", UNIT_NAME)
    targets = [root / UNIT_PATH, root / OPT]
    if purge:
        targets += [root / ETC, root / STATE]
    else:
        report.notes.append(f"kept {root / ETC} and {root / STATE} (use --purge to remove them)")
    for target in targets:
        if target.is_dir():
            shutil.rmtree(target)
            report.changed.append(str(target))
        elif target.exists():
            target.unlink()
            report.changed.append(str(target))
    if live:
        _systemctl(report, "daemon-reload")
        if purge and subprocess.run(["id", "-u", USER], capture_output=True).returncode == 0:
            subprocess.run(["userdel", USER], check=True)
            report.changed.append(f"user {USER}")
    report.journal.append(("userdel", USER))
    return report
