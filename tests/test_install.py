"""Provisioning into a directory tree: idempotent install, a one-flag change, uninstall with and without purge."""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edge.core.config import load_config
from edge.provision.install import (
    InstallError,
    InstallOptions,
    install,
    pip_spec,
    render_config,
    uninstall,
    unit_text,
)

REPO = Path(__file__).resolve().parents[1]


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file and directory under root with its content hash and mode, to compare trees."""
    tree = {}
    for path in sorted(root.rglob("*")):
        if "venv" in path.relative_to(root).parts:
            continue
        mode = stat.S_IMODE(path.lstat().st_mode)
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        tree[str(path.relative_to(root))] = (digest, mode)
    return tree


def options(root: Path, **changes) -> InstallOptions:
    base = dict(
        device_id="store12-pi",
        site="store-12",
        cameras=["entrance=rtsp://10.0.0.5:554/stream2", "till=/dev/video0"],
        broker="mqtts://broker.example:8883",
        username="store12",
        password="s3cret-pass",
        root=root,
        create_venv=False,
    )
    base.update(changes)
    return InstallOptions(**base)


def test_install_writes_a_valid_config_and_root_only_secrets(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    root = tmp_path / "root"
    install(options(root, ca=ca))

    config_path = root / "etc/rclstm-edge/config.toml"
    config = load_config(config_path)
    assert config.device_id == "store12-pi" and config.site == "store-12"
    assert [c.id for c in config.cameras] == ["entrance", "till"]
    assert config.cameras[0].resolved_kind() == "rtsp" and config.cameras[1].resolved_kind() == "v4l2"
    assert config.mqtt.url == "mqtts://broker.example:8883" and config.mqtt.username == "store12"
    assert str(config.mqtt.ca_file) == "/etc/rclstm-edge/ca.crt"
    # The password is a credential file readable by root only, never in the config.
    assert "s3cret-pass" not in config_path.read_text()
    password = root / "etc/rclstm-edge/credentials/mqtt-password"
    assert password.read_text() == "s3cret-pass"
    assert stat.S_IMODE(password.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "etc/rclstm-edge/credentials").stat().st_mode) == 0o700
    # An unused secret is an empty credential, so the unit's LoadCredential= always finds its file.
    assert (root / "etc/rclstm-edge/credentials/mqtt-key").read_bytes() == b""
    assert (root / "etc/systemd/system/rclstm-edge.service").read_bytes() == unit_text()
    assert unit_text() == (REPO / "systemd/rclstm-edge.service").read_bytes()


def test_second_install_changes_nothing_and_a_changed_flag_changes_one_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(options(root))
    (root / "var/lib/rclstm-edge/outbox.sqlite3").write_bytes(b"queued events")
    before = snapshot(root)

    again = install(options(root))
    assert again.changed == []
    assert snapshot(root) == before

    changed = install(options(root, site="store-13"))
    assert changed.changed == [str(root / "etc/rclstm-edge/config.toml")]
    after = snapshot(root)
    assert {k for k in after if after[k] != before[k]} == {"etc/rclstm-edge/config.toml"}
    assert (root / "var/lib/rclstm-edge/outbox.sqlite3").read_bytes() == b"queued events"


def test_uninstall_keeps_data_unless_purged(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(options(root))
    (root / "var/lib/rclstm-edge/outbox.sqlite3").write_bytes(b"queued events")

    uninstall(root)
    assert not (root / "etc/systemd/system/rclstm-edge.service").exists()
    assert not (root / "opt/rclstm-edge").exists()
    assert (root / "var/lib/rclstm-edge/outbox.sqlite3").exists()
    assert (root / "etc/rclstm-edge/config.toml").exists()

    uninstall(root, purge=True)
    assert not (root / "var/lib/rclstm-edge").exists()
    assert not (root / "etc/rclstm-edge").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"cameras": []}, "--camera is required"),
        ({"device_id": "bad id!"}, "device_id"),
        ({"broker": "http://broker:1883"}, "mqtt.url"),
        ({"ca": Path("/nonexistent/ca.pem")}, "--ca /nonexistent/ca.pem: no such file"),
    ],
)
def test_bad_flags_are_refused_before_anything_is_written(tmp_path: Path, changes: dict, message: str) -> None:
    root = tmp_path / "root"
    with pytest.raises(InstallError, match=message) as info:
        install(options(root, **changes))
    assert "\n" not in str(info.value)
    assert not root.exists()


def test_rendered_config_escapes_odd_values(tmp_path: Path) -> None:
    text = render_config(options(tmp_path, site='Store "12" \\ back', cameras=["rtsp://u:p@cam/a?b=1&c=2"]))
    path = tmp_path / "c.toml"
    path.write_text(text)
    config = load_config(path)
    assert config.site == 'Store "12" \\ back'
    assert config.cameras[0].source == "rtsp://u:p@cam/a?b=1&c=2" and config.cameras[0].id == "cam0"


@pytest.mark.slow
def test_install_creates_a_venv_with_this_package(tmp_path: Path) -> None:
    """The real venv step: python -m venv plus pip install of this checkout (dependencies not re-fetched)."""
    root = tmp_path / "root"
    env_before = os.environ.get("PIP_NO_DEPS")
    os.environ["PIP_NO_DEPS"] = "1"
    try:
        first = install(options(root, create_venv=True, package=str(REPO)))
        # PIP_NO_DEPS leaves the runtime out (it would need the network): a stand-in module plays the
        # installed runtime, which the re-run probes for beside the version.
        site = next((root / "opt/rclstm-edge/venv/lib").glob("python3*/site-packages"))
        (site / "ai_edge_litert.py").write_text("")
        second = install(options(root, create_venv=True, package=str(REPO)))
    finally:
        if env_before is None:
            os.environ.pop("PIP_NO_DEPS")
        else:
            os.environ["PIP_NO_DEPS"] = env_before
    venv_python = root / "opt/rclstm-edge/venv/bin/python"
    assert str(root / "opt/rclstm-edge/venv") in first.changed
    assert str(root / "opt/rclstm-edge/venv") in second.unchanged
    out = subprocess.run(
        [
            str(venv_python),
            "-c",
            "import edge, importlib.resources as r; print(edge.__version__);"
            "print(r.files('edge.provision').joinpath('unit/rclstm-edge.service').is_file())",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split() == [__import__("edge").__version__, "True"]
    assert sys.executable != str(venv_python)


def test_package_spec_carries_the_runtime(tmp_path: Path) -> None:
    wheel = tmp_path / "rclstm_edge-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    assert pip_spec(str(wheel), "tflite") == f"rclstm-edge[tflite] @ {wheel.resolve().as_uri()}"
    assert pip_spec(str(REPO), "litert") == f"rclstm-edge[litert] @ {REPO.as_uri()}"
    assert pip_spec("rclstm-edge==0.1.0", "litert") == "rclstm-edge==0.1.0"
    assert pip_spec(None, "tflite") == f"rclstm-edge[tflite]=={__import__('edge').__version__}"


@pytest.mark.slow
def test_failed_install_leaves_nothing_behind(tmp_path: Path) -> None:
    """pip fails (a broken wheel) after config, credentials and unit were written: all of it is taken back."""
    root = tmp_path / "root"
    broken = tmp_path / "rclstm_edge-0.1.0-py3-none-any.whl"
    broken.write_bytes(b"not a zip")
    with pytest.raises(InstallError) as err:
        install(options(root, create_venv=True, package=str(broken)))
    assert "pip could not install" in str(err.value) and "nothing is left behind" in str(err.value)
    assert not root.exists(), sorted(root.rglob("*"))

    # Over an earlier good install, the files it replaced come back as they were.
    install(options(root))
    before = snapshot(root)
    with pytest.raises(InstallError):
        install(options(root, site="store-13", create_venv=True, package=str(broken)))
    assert snapshot(root) == before
    assert not (root / "opt/rclstm-edge/venv").exists()


def test_cli_install_reads_the_password_from_stdin_and_reports_changes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    args = [
        sys.executable,
        "-m",
        "edge",
        "install",
        "--root",
        str(root),
        "--no-venv",
        "--device-id",
        "pi-7",
        "--site",
        "s7",
        "--camera",
        "door=rtsp://cam/stream",
        "--broker",
        "mqtt://127.0.0.1:1883",
        "--username",
        "u7",
        "--password-stdin",
    ]
    first = subprocess.run(args, input="pw from stdin\n", capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert "pw from stdin" not in first.stdout + first.stderr
    assert (root / "etc/rclstm-edge/credentials/mqtt-password").read_text() == "pw from stdin"
    second = subprocess.run(args, input="pw from stdin\n", capture_output=True, text=True)
    assert "0 changed" in second.stdout
    bad = subprocess.run([*args[:-1], "--camera", ""], input="", capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "cameras.1.source" in bad.stderr


@pytest.mark.slow
def test_documented_wheel_installs_with_install_package(tmp_path: Path) -> None:
    """docs/install.md's way onto a device: a wheel built from the checkout, given to install --package."""
    build = "python3 -m pip wheel --no-deps -w dist ."
    assert build in (REPO / "docs/install.md").read_text()
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(REPO)],
                   check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = dist.glob("rclstm_edge-*-py3-none-any.whl")
    root = tmp_path / "root"
    done = subprocess.run(
        [sys.executable, "-m", "edge", "install", "--root", str(root), "--package", str(wheel), "--runtime", "tflite",
         "--device-id", "pi-9", "--site", "s9", "--camera", "door=rtsp://cam/stream"],
        capture_output=True, text=True, env={**os.environ, "PIP_NO_DEPS": "1"},  # offline: the wheel alone
    )
    assert done.returncode == 0, done.stdout + done.stderr
    venv_python = root / "opt/rclstm-edge/venv/bin/python"
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the venv's own copy, not the checkout
    probe = subprocess.run([str(venv_python), "-c", "import edge; print(edge.__version__, edge.__file__)"],
                           capture_output=True, text=True, check=True, env=clean, cwd=tmp_path)
    version, location = probe.stdout.split()
    assert version == __import__("edge").__version__ and location.startswith(str(root / "opt/rclstm-edge/venv"))


def test_the_units_environment_starts_the_daemon_without_blas_threads() -> None:
    """numpy's and OpenCV's OpenBLAS start worker threads at import that the daemon never uses."""
    unit_env = dict(re.findall(r"^Environment=(\w+)=(\S+)$", (REPO / "systemd/rclstm-edge.service").read_text(), re.M))
    assert unit_env.get("OPENBLAS_NUM_THREADS") == "1"
    count = "import os, edge.app.daemon; print(len(os.listdir('/proc/self/task')))"
    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}

    def threads(env: dict[str, str]) -> int:
        done = subprocess.run([sys.executable, "-c", count], env=env, cwd=REPO, capture_output=True, text=True,
                              check=True, timeout=120)
        return int(done.stdout.split()[-1])

    assert threads({**base, **unit_env}) == 1
    if (os.cpu_count() or 1) > 1:  # one core: OpenBLAS starts no workers anyway
        assert threads(base) > 1
