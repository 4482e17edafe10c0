"""Bundles shipped inside the package, so the daemon runs with no model path configured."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
# Names accepted by `model.bundle` / `--model` besides a path.
BUILTIN = {
    "builtin": "fight-flow",  # optical-flow statistics, trained on two real CCTV sources (README: the shipped model)
    "fight-rclstm": "fight-rclstm",  # the earlier frame-difference CNN, fight-surv only; at chance on other sources
    "demo": "demo-synth",  # trained on generated clips; only for `rclstm-edge demo` and tests
}


def resolve_bundle(spec: str | Path) -> Path:
    """A bundle directory from a built-in name or a path."""
    name = BUILTIN.get(str(spec))
    return HERE / name if name else Path(spec)
