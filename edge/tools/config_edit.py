"""Set a camera's decision keys in a TOML config with a minimal text edit, so comments and layout survive.

The edit is refused (``ConfigEditError``) when the file, parsed again, would differ in anything
but those keys, and the result is validated as a config before it replaces the file atomically.
"""

from __future__ import annotations

import copy
import os
import re
import tempfile
from pathlib import Path

from edge.core.config import ConfigError, tomllib, validate_config

DIGITS = 4


class ConfigEditError(Exception):
    """The config's layout is too unusual to edit safely; the message says what to set by hand."""


_HEADER = re.compile(r"^\s*(\[\[?)\s*([^\[\]#]+?)\s*\]\]?\s*(?:#.*)?$")


def _headers(lines: list[str]) -> list[tuple[int, str, str]]:
    """(line index, '[' or '[[', dotted name without spaces) of every table header."""
    out = []
    for i, line in enumerate(lines):
        m = _HEADER.match(line)
        if m:
            out.append((i, m.group(1), re.sub(r"\s*\.\s*", ".", m.group(2))))
    return out


def _set_keys(lines: list[str], first: int, stop: int, values: dict[str, str], prefix: str = "") -> None:
    """Replace ``prefix+key = ...`` lines in [first, stop), keeping comments; append missing keys after the last one."""
    last = first - 1
    for key, value in values.items():
        pattern = re.compile(rf"^(\s*{re.escape(prefix + key)}\s*=\s*)([^#\n]*?)(\s*(?:#.*)?)(\r?\n)?$")
        for i in range(first, stop):
            m = pattern.match(lines[i])
            if m:
                lines[i] = f"{m.group(1)}{value}{m.group(3)}{m.group(4) or ''}"
                break
        else:
            for i in range(first, stop):
                if lines[i].strip() and not lines[i].lstrip().startswith("#"):
                    last = i
            insert_at = max(last + 1, first)
            lines.insert(insert_at, f"{prefix}{key} = {value}\n")
            stop += 1


def edit_decision(text: str, camera_id: str, threshold: float, start_windows: int) -> str:
    """The config text with the camera's decision threshold and start_windows set, nothing else changed."""
    data = tomllib.loads(text)
    cameras = data.get("cameras")
    ids = [c.get("id") for c in cameras] if isinstance(cameras, list) else []
    if camera_id not in ids:
        raise ConfigEditError(f"camera {camera_id} is not in the config file; add its [[cameras]] table first")
    index = ids.index(camera_id)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    headers = _headers(lines)
    starts = [i for i, kind, name in headers if kind == "[[" and name == "cameras"]
    if len(starts) != len(ids):
        raise ConfigEditError("the cameras are not all written as [[cameras]] tables")
    start = starts[index]
    later = [(i, kind, name) for i, kind, name in headers if i > start]
    end = next((i for i, kind, name in later if not name.startswith("cameras.")), len(lines))
    body_end = later[0][0] if later else len(lines)
    values = {"threshold": repr(round(threshold, DIGITS)), "start_windows": str(start_windows)}
    decision = next((i for i, kind, name in later if i < end and kind == "[" and name == "cameras.decision"), None)
    inline = "decision" in cameras[index]
    if decision is not None:
        stop = next((i for i, _, _ in later if i > decision), len(lines))
        _set_keys(lines, decision + 1, stop, values)
    elif inline:
        _set_keys(lines, start + 1, body_end, values, prefix="decision.")
    else:
        content = end
        while content > start + 1 and not lines[content - 1].strip():
            content -= 1
        block = ["\n", "[cameras.decision]\n", *(f"{k} = {v}\n" for k, v in values.items())]
        lines[content:content] = block
    edited = "".join(lines)
    expected = copy.deepcopy(data)
    expected["cameras"][index].setdefault("decision", {}).update(threshold=round(threshold, DIGITS),
                                                                 start_windows=start_windows)
    try:
        same = tomllib.loads(edited) == expected
    except tomllib.TOMLDecodeError:
        same = False
    if not same:
        raise ConfigEditError(
            f"cannot edit the config safely (an unusual layout); set threshold = {values['threshold']} and "
            f"start_windows = {start_windows} under [cameras.decision] of camera {camera_id} by hand"
        )
    return edited


def write_decision(path: Path, camera_id: str, threshold: float, start_windows: int) -> None:
    """Edit the file in place (atomically, mode kept); the edited text is validated before it is written."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read the config file ({exc})"]) from None
    edited = edit_decision(text, camera_id, threshold, start_windows)
    validate_config(tomllib.loads(edited))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(edited)
        os.chmod(tmp, path.stat().st_mode & 0o7777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
