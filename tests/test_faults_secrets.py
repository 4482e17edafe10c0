"""Issue 12's secret cases: files the installer and the daemon create are not readable by others."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from edge.core.config import load_config
from edge.provision.install import InstallOptions, install
from edge.synthetic import write_stream

ROOT = Path(__file__).resolve().parents[1]


def test_install_keeps_a_camera_password_away_from_other_users(tmp_path: Path) -> None:
    root = tmp_path / "root"
    install(InstallOptions(device_id="pi", site="s", cameras=["door=rtsp://viewer:SECRET@10.0.0.5/stream"],
                           broker="mqtts://broker.example:8883", username="pi", password="mqtt-pass", root=root,
                           create_venv=False))
    config = root / "etc/rclstm-edge/config.toml"
    mode = stat.S_IMODE(config.stat().st_mode)
    assert mode == 0o640, oct(mode)  # root and the service's group; nobody else
    text = config.read_text()
    assert "mqtt-pass" not in text
    assert "Secrets are not here" not in text  # the header no longer claims what is not true
    assert "camera's password" in text and "0640" in text
    assert load_config(config).cameras[0].source == "rtsp://viewer:SECRET@10.0.0.5/stream"


def test_outside_systemd_the_state_dir_and_outbox_are_private(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    write_stream(video, [("calm", 2.0)], fps=25)
    state = tmp_path / "state"
    config = tmp_path / "config.toml"
    config.write_text(f'state_dir = "{state}"\n[mqtt]\nurl = "mqtt://127.0.0.1:9"\n[outbox]\nflush_timeout_s = 0\n'
                      f'[[cameras]]\nid = "c"\nsource = "{video}"\nrealtime = false\n')
    run = subprocess.run([sys.executable, "-c", "import os, sys; os.umask(0o022); from edge.app.cli import main; "
                          f"sys.exit(main(['run', '--config', {str(config)!r}]))"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120, env=dict(os.environ))
    assert run.returncode == 0, run.stderr
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    files = [p for p in state.iterdir() if p.name.startswith("outbox.db")]
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
