"""``rclstm-edge``: run, check, demo, schema, install, uninstall, replay, calibrate and export-clips.

Imports are deferred into the commands so ``rclstm-edge --help`` and a config error answer at once,
and the daemon's start-up is not paid for by the commands that do not need OpenCV or the runtime.
Exit codes: 0 ok, 1 runtime failure (bundle, camera, broker), 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.core.errors import EXIT_FAIL, EXIT_OK, EXIT_USAGE, UsageError

if TYPE_CHECKING:
    from edge.core.config import Config

DEMO_SEGMENTS = [("calm", 8.0), ("fight", 5.0), ("calm", 8.0)]


def _parser() -> argparse.ArgumentParser:
    from edge import __version__

    parser = argparse.ArgumentParser(prog="rclstm-edge", description="Camera anomaly detection at the edge.")
    parser.add_argument("--version", action="version", version=f"rclstm-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon (flags override the config file)")
    run.add_argument("--config", type=Path, help="TOML config file (default: built-in defaults)")
    run.add_argument("--source", help="camera source for the first camera: PATH, URL or device INDEX "
                     "(a file that does not exist is an error at once; a camera that fails is retried)")
    run.add_argument("--model", help="bundle directory, or 'builtin' / 'demo'")
    run.add_argument("--broker", help="mqtt://HOST:PORT or mqtts://HOST:PORT (default: events to stdout)")
    run.add_argument("--device-id", help="device id used in topics and events")
    run.add_argument("--state-dir", type=Path, help="where the outbox lives")
    run.add_argument("--fast", action="store_true", help="read file sources as fast as possible")

    check = sub.add_parser("check", help="check config, cameras, model and broker; non-zero exit on failure")
    check.add_argument("--config", type=Path, required=True,
                       help="the TOML config file to check, as the daemon will read it "
                            "(on a device: /etc/rclstm-edge/config.toml)")

    demo = sub.add_parser("demo", help="the whole pipeline on a generated video, no camera or broker needed")
    demo.add_argument("--broker", help="also publish to this broker (mqtt://HOST:PORT)")

    schema = sub.add_parser("schema", help="print a JSON Schema")
    schema.add_argument("name", choices=["event", "camera-status", "stats", "feedback"])

    install = sub.add_parser("install", help="provision this device: user, venv, config, credentials, unit")
    install.add_argument("--device-id", required=True,
                         help="this device's id: in every topic ({prefix}/DEVICE/...) and event; letters, digits, "
                              "'.', '_', '-'")
    install.add_argument("--site", required=True,
                         help="the store or site this device is in, copied into every event (required: a backend "
                              "groups devices by it)")
    install.add_argument(
        "--camera",
        action="append",
        default=[],
        metavar="[ID=]SOURCE",
        help="a camera (repeat for several): rtsp://..., http://..., /dev/video0 or an index",
    )
    install.add_argument("--broker", help="mqtts://HOST:8883 (or mqtt://HOST:1883 on a trusted network)")
    install.add_argument("--username", help="MQTT username (default: none; usually the device id, with an ACL "
                                            "limiting it to its own prefix, see docs/mqtt.md)")
    secret = install.add_mutually_exclusive_group()
    secret.add_argument("--password-stdin", action="store_true", help="read the MQTT password from stdin")
    secret.add_argument("--password-file", type=Path, help="read the MQTT password from this file")
    install.add_argument("--ca", type=Path, help="CA certificate that signed the broker's certificate")
    install.add_argument("--cert", type=Path, help="client certificate (mutual TLS)")
    install.add_argument("--key", type=Path, help="client key (stored as a root-only credential)")
    install.add_argument("--model", default="builtin", help="bundle path or 'builtin'")
    install.add_argument("--runtime", choices=["litert", "tflite"], default="litert",
                         help="the TFLite runtime installed beside the package (default: litert)")
    install.add_argument("--package", metavar="SPEC",
                         help="what pip installs into the venv: a wheel built from the checkout "
                              "(python -m pip wheel --no-deps -w dist .) or a requirement (default: this version "
                              "from the configured index); the --runtime is installed with it")
    install.add_argument("--root", type=Path, default=Path("/"), help="install into this directory tree instead")
    install.add_argument("--no-venv", action="store_true", help="do not create or update /opt/rclstm-edge/venv")
    install.add_argument("--skip-check", action="store_true", help="do not run `check` at the end")

    replay = sub.add_parser("replay", help="the daemon's pipeline over a recording: annotated video, timeline, events")
    replay.add_argument("video", type=Path, metavar="VIDEO")
    replay.add_argument("--config", type=Path, help="TOML config file (default: built-in defaults)")
    replay.add_argument("--camera", help="camera whose settings to use (default: the first)")
    replay.add_argument("--model", help="bundle directory, or 'builtin' / 'demo' (default: the config's)")
    replay.add_argument("--out", type=Path, required=True, help="folder for annotated.mp4, timeline.png, events.jsonl")
    replay.add_argument("--no-plots", action="store_true", help="skip the timeline PNG (no matplotlib needed)")

    calibrate = sub.add_parser("calibrate", help="choose a camera's threshold from its recordings without incidents")
    calibrate.add_argument("recordings", nargs="*", type=Path, metavar="RECORDING")
    calibrate.add_argument("--config", type=Path, required=True)
    calibrate.add_argument("--camera", required=True, help="the camera the recordings come from")
    calibrate.add_argument("--max-false-alarms-per-day", type=float, default=1.0, metavar="N")
    labels = calibrate.add_mutually_exclusive_group()
    labels.add_argument("--labelled", type=Path, metavar="DIR", help="recordings in one folder per label")
    labels.add_argument("--intervals", type=Path, metavar="FILE", help="lines 'path start_s end_s' of incidents")
    calibrate.add_argument("--model", help="bundle directory, or 'builtin' / 'demo' (default: the config's)")
    calibrate.add_argument("--write", action="store_true", help="set the choice in the camera's [cameras.decision]")
    calibrate.add_argument("--out", type=Path, default=Path("calibration"), help="folder for calibration.json/.png")
    calibrate.add_argument("--no-plots", action="store_true", help="skip the curve PNG (no matplotlib needed)")

    export = sub.add_parser("export-clips", help="the judged incident clips (and calm ones) as a training dataset")
    export.add_argument("out", type=Path, metavar="OUT", help="a new (or empty) folder to write the dataset into")
    export.add_argument("--config", type=Path, help="the daemon's TOML config (its state_dir holds the clips)")
    export.add_argument("--state-dir", type=Path, help="the daemon's state directory (overrides the config's)")
    export.add_argument("--normal-label", default="normal", metavar="LABEL",
                        help="class folder for false alarms and calm clips; confirmed incidents go under the label "
                             "the model raised (default normal; map it in training with --class-map normal=LABEL)")

    uninstall = sub.add_parser("uninstall", help="remove the unit and venv (config and outbox kept unless --purge)")
    uninstall.add_argument("--root", type=Path, default=Path("/"))
    uninstall.add_argument("--purge", action="store_true", help="also remove config, credentials, outbox and user")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from edge.adapters.runtime import RuntimeMissing
    from edge.bundle import BundleError
    from edge.core.config import ConfigError

    if args.command in ("run", "demo", "check", "replay", "calibrate"):
        # Every command that opens a source: FFmpeg's and OpenCV's own complaints come through our logger,
        # in logfmt and rate-limited, instead of thousands of raw lines on stderr (or stdout).
        from edge.adapters.logs import route_native_logs

        route_native_logs()
        import cv2

        # One OpenCV worker thread: OpenCV splits each resize and colour conversion over a pool of one
        # thread per core, and for these small pictures the hand-offs cost more than they save
        # (prepare_frame of a 640x360 frame: 732 us of CPU with the pool of 2, 532 us with one thread,
        # the same pixels). Cameras already run on threads of their own. FFmpeg's decoder threads are
        # set per camera (decoder_threads) and not affected.
        cv2.setNumThreads(1)
    try:
        if args.command == "schema":
            from edge.core.messages import schema_text

            sys.stdout.write(schema_text(args.name))
            return EXIT_OK
        if args.command == "check":
            from edge.provision.check import run_checks

            return run_checks(args.config)
        if args.command == "demo":
            return _demo(args.broker)
        if args.command in ("install", "uninstall"):
            return _provision(args)
        if args.command in ("replay", "calibrate"):
            return _replay_or_calibrate(args)
        if args.command == "export-clips":
            return _export_clips(args)
        return _run(args)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (BundleError, RuntimeMissing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL


def _provision(args: argparse.Namespace) -> int:
    from edge.provision.install import InstallOptions, install, uninstall

    if args.command == "uninstall":
        report = uninstall(args.root, purge=args.purge)
    else:
        password = None
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\n")
        elif args.password_file is not None:
            password = args.password_file.read_text(encoding="utf-8").strip()
        options = InstallOptions(
            device_id=args.device_id,
            site=args.site,
            cameras=args.camera,
            broker=args.broker,
            username=args.username,
            password=password,
            ca=args.ca,
            cert=args.cert,
            key=args.key,
            model=args.model,
            root=args.root,
            package=args.package,
            runtime=args.runtime,
            create_venv=not args.no_venv,
        )
        report = install(options)
    for path in report.changed:
        print(f"changed  {path}")
    for note in report.notes:
        print(f"note     {note}")
    print(f"{len(report.changed)} changed, {len(report.unchanged)} unchanged")
    if args.command == "install" and not args.skip_check:
        if args.root.resolve() != Path("/"):
            print("note     check skipped: the config under --root names paths of the target system")
            return EXIT_OK
        from edge.adapters.logs import route_native_logs
        from edge.provision.check import run_checks

        route_native_logs()  # only now: the venv and systemctl steps before write their own stderr
        return run_checks(args.root / "etc/rclstm-edge/config.toml")
    return EXIT_OK


def _replay_or_calibrate(args: argparse.Namespace) -> int:
    """Bad recordings, labels or camera ids are usage errors (2, raised to ``main``); no setting meeting the
    target, a config too unusual to edit or missing plots are failures (1)."""
    from edge.adapters import logs
    from edge.core.config import load_config
    from edge.tools.config_edit import ConfigEditError
    from edge.tools.plots import PlotsMissing

    logs.setup("error")
    config = load_config(args.config)
    for note in config.deprecations:
        print(f"warning: config: {note}", file=sys.stderr)
    try:
        if args.command == "replay":
            from edge.tools.replay import replay, summary

            done = replay(args.video, args.out, config, camera_id=args.camera, config_path=args.config,
                          model_spec=args.model, plots=not args.no_plots)
            print(summary(done))
            return EXIT_OK
        from edge.tools.calibrate import calibrate, report, write_outputs
        from edge.tools.config_edit import write_decision

        cal = calibrate(config, args.camera, args.recordings, target=args.max_false_alarms_per_day,
                        config_path=args.config, labelled_dir=args.labelled, intervals_file=args.intervals,
                        model_spec=args.model, progress=lambda line: print(line, file=sys.stderr))
        print(report(cal))
        for path in write_outputs(cal, args.out, plots=not args.no_plots):
            print(f"wrote {path}")
        if cal.chosen is None:
            print(f"error: no threshold keeps camera {args.camera} at or under {args.max_false_alarms_per_day:g} "
                  "false alarm(s)/day on these recordings; check them for incidents or retrain", file=sys.stderr)
            return EXIT_FAIL
        if args.write:
            write_decision(args.config, args.camera, cal.chosen.threshold, cal.chosen.start_windows)
            print(f"wrote threshold {cal.chosen.threshold:g}, start_windows {cal.chosen.start_windows} "
                  f"to {args.config} (camera {args.camera})")
        return EXIT_OK
    except (PlotsMissing, ConfigEditError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL


def _export_clips(args: argparse.Namespace) -> int:
    from edge.core.config import load_config
    from edge.tools.export_clips import export_clips

    state_dir = args.state_dir or load_config(args.config).state_dir
    print(export_clips(state_dir, args.out, args.normal_label).summary())
    return EXIT_OK


def apply_flags(config: Config, args: argparse.Namespace) -> Config:
    """Command-line flags over the file's settings, validated again as a whole."""
    from edge.core.config import override, parse_source

    changes: dict[str, Any] = {}
    if args.source is not None or args.fast:
        cameras = config.model_dump(exclude_unset=True).get("cameras") or [{"id": "cam0", "source": 0}]
        if args.source is not None:
            cameras[0]["source"] = parse_source(args.source)
        if args.fast:
            cameras = [{**camera, "realtime": False} for camera in cameras]
        changes["cameras"] = cameras
    flags = {"model.bundle": args.model, "mqtt.url": args.broker, "device_id": args.device_id,
             "state_dir": args.state_dir}
    changes.update({key: value for key, value in flags.items() if value is not None})
    return override(config, changes)


def _missing_file(config: Config, source: str | None) -> None:
    """``--source PATH`` that does not exist will not appear (a camera that is unplugged may): a usage error.
    A config file's cameras keep the daemon's rule: a source that cannot be opened is retried."""
    camera = config.cameras[0]
    if source is not None and camera.resolved_kind() == "file" and not Path(str(camera.source)).exists():
        raise UsageError(f"camera {camera.id}: {camera.source}: no such file; check the path")


def _run(args: argparse.Namespace) -> int:
    from edge.adapters import logs

    bound_malloc()
    from edge.core.config import load_config, secret_exposure_warning

    config = apply_flags(load_config(args.config), args)
    _missing_file(config, args.source)
    logs.setup(config.log_level)
    import logging

    for warning in [secret_exposure_warning(args.config, config.mqtt), *config.deprecations]:
        if warning:
            logging.getLogger("edge").warning(warning)
    from edge.app.daemon import Daemon
    from edge.sinks import sink_for

    daemon = Daemon(config, sink_for(config))
    daemon.install_signal_handlers()
    return daemon.run()


def bound_malloc() -> bool:
    """Have glibc return every large block (a decoded frame) to the system when it is freed.

    glibc raises its mmap threshold to the size of the largest block freed (up to 32 MB), after
    which decoded frames (6 MB at 1080p, 25 MB at 4K) come from the heap and their pages stay
    resident; measured with a 4K file source, that is 280 MB RSS instead of 160 MB. A fixed
    1 MB threshold and two arenas keep it flat. False where there is no glibc.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_arena_max, m_mmap_threshold = -8, -3
    return bool(mallopt(m_mmap_threshold, 1 << 20)) and bool(mallopt(m_arena_max, 2))


class _EventTee:
    """The demo's stdout: event lines pass through and are kept for the summary."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def write(self, text: str) -> None:
        import json

        sys.stdout.write(text)
        self.events += [json.loads(line) for line in text.splitlines() if line.strip()]

    def flush(self) -> None:
        sys.stdout.flush()


def _demo(broker: str | None) -> int:
    import tempfile

    from edge.adapters import logs
    from edge.app.daemon import Daemon
    from edge.core.config import Config
    from edge.sinks import sink_for
    from edge.synthetic import write_stream

    logs.setup("warning")
    with tempfile.TemporaryDirectory(prefix="rclstm-demo-") as tmp:
        video = Path(tmp) / "demo.mp4"
        spans = write_stream(video, DEMO_SEGMENTS, fps=25)
        fight = next((start, end) for kind, start, end in spans if kind == "fight")
        print(
            f"demo: generated {video.name}: calm, then a fight from {fight[0]:.0f} s to {fight[1]:.0f} s, "
            "then calm again; running the demo model on it",
            file=sys.stderr,
        )
        config = Config.model_validate(
            {
                "device_id": "demo",
                "site": "demo",
                "state_dir": str(Path(tmp) / "state"),
                "model": {"bundle": "demo"},
                "mqtt": {"url": broker},
                "cameras": [{"id": "cam0", "source": str(video), "kind": "file", "realtime": False}],
            }
        )

        out = _EventTee()
        daemon = Daemon(config, sink_for(config, echo=out))  # type: ignore[arg-type]
        daemon.install_signal_handlers()
        code = daemon.run()
    kinds = [e["type"] for e in out.events]
    for event in out.events:
        if event["type"] in ("start", "end"):
            print(
                f"demo: {event['type']:5s} {event['label']} incident {str(event['event_id'])[:8]} "
                f"score {event['score']:.2f} (peak {event['peak_score']:.2f})",
                file=sys.stderr,
            )
    if code != EXIT_OK or "start" not in kinds or "end" not in kinds:
        print("demo: FAILED: no complete anomaly incident was detected", file=sys.stderr)
        return EXIT_FAIL
    where = f" and to {broker}" if broker else ""
    print(f"demo: {kinds.count('start')} incident(s), {len(kinds)} event message(s) on stdout{where}", file=sys.stderr)
    return EXIT_OK
