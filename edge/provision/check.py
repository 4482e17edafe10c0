"""``rclstm-edge check``: what an installer runs before walking away.

Each item prints one PASS/FAIL line with its reason, and every item runs even after a failure, so
one run shows everything that needs fixing. The model is classified on a window built from a
frame the first camera really delivered, through the same preprocessing as the daemon.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge.core.config import Config, ConfigError, load_config, resolve_password, secret_exposure_warning
from edge.core.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from edge.adapters.runtime import BundleModel


def _line(ok: bool, item: str, reason: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'} {item}: {reason}", flush=True)
    return ok


def run_checks(path: Path) -> int:
    """Every item's PASS/FAIL line on stdout. Logs go through the logger at error only: OpenCV's and FFmpeg's
    warnings about a camera ("[tcp @ 0x...] Connection refused") repeat what its FAIL line says."""
    from edge.adapters import logs

    logs.setup("error")
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            _line(False, "config", problem)
        return EXIT_USAGE
    results = [_line(True, "config", f"{path} is valid ({len(config.cameras)} camera(s))")]
    for warning in [secret_exposure_warning(path, config.mqtt), *config.deprecations]:
        if warning:
            print(f"WARN config: {warning}", flush=True)
    if "site" not in config.model_fields_set:
        print('WARN config: site is not set, so every event says site "default"; set site = "STORE" '
              "(install --site sets it)", flush=True)
    from edge.adapters.sources import set_v4l2_select_timeout

    set_v4l2_select_timeout(config.cameras)
    frame = None
    for camera in config.cameras:
        ok, reason, image = _check_camera(camera)
        results.append(_line(ok, f"camera {camera.id}", reason))
        frame = image if frame is None else frame
    results.append(_line(*_check_model(config, frame)))
    results.append(_line(*_check_broker(config)))
    results.append(_line(*_check_state_dir(config)))
    if config.clips.enabled:
        results.append(_line(*_check_clips(config)))
    return EXIT_OK if all(results) else EXIT_FAIL


def _check_camera(camera) -> tuple[bool, str, np.ndarray | None]:  # type: ignore[no-untyped-def]
    from edge.adapters.sources import SourceError, read_one, redact

    try:
        frame = read_one(camera, camera.open_timeout_s)
    except SourceError as exc:
        return False, str(exc).removeprefix(f"camera {camera.id}: "), None
    h, w = frame.image.shape[:2]
    return True, f"read a {w}x{h} frame from {redact(camera.source)}", frame.image


def _check_model(config: Config, frame: np.ndarray | None) -> tuple[bool, str, str]:
    from edge.adapters.runtime import BundleModel, RuntimeMissing
    from edge.bundle import BundleError
    from edge.preprocess import window_inputs

    item = "model"
    try:
        model = BundleModel.configured(config.model)
    except (BundleError, RuntimeMissing) as exc:
        return False, item, str(exc)
    spec = model.manifest.input
    image = frame if frame is not None else np.zeros((spec.height, spec.width, 3), np.uint8)
    prepared = spec.prepare(image)
    window = window_inputs([prepared] * (spec.frames + 1), spec.representation)
    began = time.perf_counter()
    probs = model.predict_window(window)
    elapsed_ms = (time.perf_counter() - began) * 1000
    if probs.shape != (len(model.manifest.labels),) or not np.all(np.isfinite(probs)):
        return False, item, f"classifying one window gave {probs!r}; the bundle is broken, convert it again"
    if warning := model.manifest.chance_warning():
        print(f"WARN model: {warning}", flush=True)
    source = "a camera frame" if frame is not None else "a blank frame (no camera delivered one)"
    top = model.manifest.labels[int(np.argmax(probs))]
    return True, item, (f"{model.manifest.name} {model.manifest.version} on {model.runtime.name} "
                        f"{model.runtime.version} classified one window of {source} in {elapsed_ms:.0f} ms "
                        f"(top label {top}); {_decision_origin(config, model)}")


def _decision_origin(config: Config, model: BundleModel) -> str:
    """Which threshold, start_windows and hop the daemon will use, and where each comes from.

    A bundle may recommend its own (its manifest's ``decision``); an installer reading ``check``
    should see that the number in effect is not the one in the docs' example.
    """
    camera = config.cameras[0]
    decision, classifier = model.recommended_decision(), model.recommended_classifier()
    sections = [(config.decision, decision, config.decision_for(camera, decision), ("threshold", "start_windows")),
                (config.classifier, classifier, config.classifier_for(camera, classifier), ("hop",))]
    parts = []
    for section, recommended, chosen, keys in sections:
        for key in keys:
            origin = ("config" if key in section.model_fields_set
                      else "the model's" if key in recommended else "default")
            parts.append(f"{key} {getattr(chosen, key)} ({origin})")
    return "decision " + ", ".join(parts)


def _check_broker(config: Config) -> tuple[bool, str, str]:
    from edge.adapters.mqtt import check_broker

    item = "broker"
    if config.mqtt.url is None:
        return True, item, "not configured: events go to stdout as JSON lines"
    try:
        password = resolve_password(config.mqtt)
        ok, reason = check_broker(config.mqtt, config.device_id, password)
    except ConfigError as exc:
        return False, item, "; ".join(exc.problems)
    return ok, item, reason


def _check_state_dir(config: Config) -> tuple[bool, str, str]:
    from edge.adapters.outbox import OUTBOX_NAME, Outbox, OutboxInUse, usable_state_dir

    item = "state_dir"
    if config.mqtt.url is None:
        return True, item, "not needed without a broker"
    problem = _unwritable(config.state_dir)
    if problem:
        return False, item, problem
    try:
        directory = usable_state_dir(config.state_dir)
        box = Outbox(directory / OUTBOX_NAME, config.outbox.max_rows, config.outbox.max_bytes, open_retry_s=0)
    except OutboxInUse:
        return True, item, f"outbox {directory / OUTBOX_NAME} is held by the running daemon"
    except OSError as exc:
        return False, item, str(exc)
    depth = box.depth()
    box.close()
    return True, item, f"outbox {directory / OUTBOX_NAME} opens ({depth} message(s) waiting)"


def _check_clips(config: Config) -> tuple[bool, str, str]:
    """Room for clips where the daemon keeps them; reads only (check may run as root, the daemon does not)."""
    import shutil

    from edge.adapters.clips import CLIPS_DIR, list_clips

    item, cfg = "clips", config.clips
    problem = _unwritable(config.state_dir)
    if problem:
        return False, item, problem
    free = shutil.disk_usage(config.state_dir).free
    if free < cfg.min_free_bytes:
        return False, item, (f"{free // 1_000_000} MB free in {config.state_dir}, under clips.min_free_bytes "
                             f"({cfg.min_free_bytes // 1_000_000} MB): no clip will be kept; free space or lower it")
    root = config.state_dir / CLIPS_DIR
    kept = list_clips(root) if root.is_dir() else []
    judged = sum(1 for record, _ in kept if record.verdict is not None)
    verdicts = "" if config.mqtt.url else "; no broker, so no verdicts arrive"
    return True, item, (f"{root}: {len(kept)} clip(s), {judged} judged, {free // 1_000_000} MB free "
                        f"(at most {cfg.max_bytes // 1_000_000} MB, {cfg.max_age_days:g} days){verdicts}")


def _unwritable(directory: Path) -> str | None:
    """Why the configured state_dir itself cannot hold the outbox; check never takes the daemon's
    per-user fallback (that is for a development machine), so a path like /proc/rclstm fails here."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        if not os.access(directory, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied")
    except OSError as exc:
        return (f"state_dir {directory} is not writable ({exc.strerror or exc}); set state_dir to a directory the "
                "service user owns (install creates /var/lib/rclstm-edge)")
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_checks(Path(sys.argv[1])))
