"""The README's examples stay true: its config example validates and its commands exist."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from edge.core.config import load_config

README = Path(__file__).resolve().parents[1] / "README.md"


def test_config_example_is_valid(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", README.read_text(), re.S)
    assert blocks, "the README has no TOML example"
    for index, block in enumerate(blocks):
        path = tmp_path / f"example{index}.toml"
        path.write_text(block)
        config = load_config(path)
        assert config.cameras


def test_documented_subcommands_exist() -> None:
    text = README.read_text()
    for tool, module in (("rclstm-edge", "edge"), ("rclstm-convert", "converter")):
        documented = set(re.findall(rf"^{tool} ([\w-]+)", text, re.M))
        assert documented, f"no {tool} commands documented"
        for command in documented:
            result = subprocess.run([sys.executable, "-m", module, command, "--help"], capture_output=True, text=True)
            assert result.returncode == 0, f"{tool} {command}: {result.stderr}"
