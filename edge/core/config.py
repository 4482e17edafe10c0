"""Daemon settings: one TOML file (plus command-line overrides) validated once at start.

Secrets (the MQTT password, a TLS client key) come from environment variables or from systemd's
``$CREDENTIALS_DIRECTORY`` as well as from the file, so an installer never has to leave a password
in a world-readable config. Every problem is reported as one line naming the key path, the value
and what is allowed, so ``rclstm-edge check`` can print them all at once.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from edge.core.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

BUILTIN_MODEL = "builtin"
DEFAULT_CONFIG_PATH = Path("/etc/rclstm-edge/config.toml")
PASSWORD_ENV = "RCLSTM_MQTT_PASSWORD"
PASSWORD_CREDENTIAL = "mqtt-password"
KEY_CREDENTIAL = "mqtt-key"
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# Sampled frames between two classifications (``[classifier] hop``); the converter evaluates on this grid too.
DEFAULT_HOP = 4
# V4L2 numbers its devices /dev/video0 to /dev/video255 (the kernel's VIDEO_NUM_DEVICES).
MAX_DEVICE_INDEX = 255
# An MQTT topic is at most 65535 bytes. After the prefix come at most 200 more: "/{device_id}/{camera}/
# snapshot/{uuid}" is 176 with 64-character ids, and a discovery topic ("/binary_sensor/rclstm-edge-
# {device_id}/{camera}_anomaly/config") 171; prefixes are ASCII by their pattern, so characters are bytes.
MQTT_TOPIC_MAX = 65535
MAX_PREFIX = MQTT_TOPIC_MAX - 200
_URL_PASSWORD = re.compile(r"(://[^/\s:@]*:)[^@\s/]*@")


def redact_secrets(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ***."""
    return _URL_PASSWORD.sub(r"\1***@", text)


RuntimeName = Literal["auto", "ai-edge-litert", "tflite-runtime"]


def parse_source(source: str | int) -> str | int:
    """A camera source as given on a command line or in a file: all digits is a V4L2 device index."""
    return int(source) if isinstance(source, str) and source.isdigit() else source


class ConfigError(UsageError):
    """Invalid settings; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


SectionT = TypeVar("SectionT", bound=_Section)


class ModelConfig(_Section):
    bundle: str = BUILTIN_MODEL
    num_threads: int = Field(1, ge=1, le=16)
    runtime: RuntimeName = "auto"


class DecisionConfig(_Section):
    """When a run of anomalous windows becomes an incident, and when it ends.

    The defaults were chosen by replaying the shipped model over an 84 s stream of real CCTV clips
    (three 8 s fight segments spliced into normal footage; `python -m bench --only latency` builds
    it) and sweeping threshold x start_windows x end_windows x cooldown_s x classifier.hop (324 settings):
    0.7 / 3 / 5 / 5 s / 4 found all three fights 1.8, 0.6 and 3.1 s after they began with the fewest
    false starts (2; with ``classifier.scene_cut`` one of them, at a cut between spliced clips, went away, and
    the other is the model scoring a normal clip high); 0.5 with 2 windows alerted
    faster but raised more false starts and, with a long end, swallowed a fight into an earlier
    false incident; a 10 s cooldown delayed or missed fights that followed an incident. A camera's
    own false-alarm rate is what `rclstm-edge calibrate` tunes the threshold for.
    """

    threshold: float = Field(0.7, ge=0.0, le=1.0)
    start_windows: int = Field(3, ge=1, le=1000)
    end_windows: int = Field(5, ge=1, le=1000)
    cooldown_s: float = Field(5.0, ge=0.0, le=86400.0)
    update_interval_s: float = Field(5.0, gt=0.0, le=86400.0)


class ClassifierConfig(_Section):
    """How often a camera's windows are classified and what the classifier reads as a scene cut.

    ``hop`` is how many newly sampled frames pass between two classifications, a fifth of a window
    for a 20-frame one at the default 4. A bundle may record the hop its decision settings were
    chosen at (the shipped model's: 2 of its 8 frames, 0.5 s); unset here, that one applies
    (``classifier_for``), else ``DEFAULT_HOP``, the grid the converter evaluates clips on by default.

    ``scene_cut`` is the share of the picture that must change between two sampled frames for the
    change to count as a cut (lights switched, a day/night switch, the camera moved), not as
    movement: the difference image across it, a bright full frame the model never saw in training,
    is replaced by "no movement", as for the first frame of a stream, and the window goes on. 1.0
    turns it off. See ``edge.preprocess.changed_fraction`` for the measurements behind 0.6.

    Both sat under ``[decision]`` before; ``migrate_classifier_keys`` still reads them there.
    """

    hop: int = Field(DEFAULT_HOP, ge=1, le=256)
    scene_cut: float = Field(0.6, gt=0.0, le=1.0)


def _optional(field: FieldInfo) -> tuple[Any, FieldInfo]:
    """The same field and bounds with no value meaning "not set"."""
    return field.annotation | None, FieldInfo.merge_field_infos(field, default=None)


def _overrides(section: type[_Section], name: str) -> type[_Section]:
    """A camera's overrides of a device-wide section, generated from it so the keys and bounds are the
    same by definition; unset keys inherit the device-wide value."""
    return create_model(  # type: ignore[call-overload, no-any-return]
        name,
        __base__=_Section,
        __doc__=f"Per-camera changes to the device-wide {section.__name__} settings; unset keys inherit them.",
        **{key: _optional(field) for key, field in section.model_fields.items()},
    )


DecisionOverrides = _overrides(DecisionConfig, "DecisionOverrides")
ClassifierOverrides = _overrides(ClassifierConfig, "ClassifierOverrides")


SourceKind = Literal["auto", "v4l2", "rtsp", "mjpeg", "file"]


class CameraConfig(_Section):
    id: str = Field(pattern=ID_PATTERN)
    source: str | int
    kind: SourceKind = "auto"
    open_timeout_s: float = Field(10.0, gt=0, le=300)
    read_timeout_s: float = Field(5.0, gt=0, le=300)
    stall_timeout_s: float = Field(15.0, gt=0, le=3600)
    realtime: bool = True
    loop: bool = False
    # FFmpeg decoder threads for this camera; unset: 1 up to 720p, 2 above (docs/performance.md says why).
    decoder_threads: int | None = Field(None, ge=1, le=16)
    decision: DecisionOverrides = Field(default_factory=DecisionOverrides)  # type: ignore[valid-type]
    classifier: ClassifierOverrides = Field(default_factory=ClassifierOverrides)  # type: ignore[valid-type]

    @field_validator("source", mode="before")
    @classmethod
    def _source_kind(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ValueError(f"must be a device index (0 to {MAX_DEVICE_INDEX}) or a quoted string (a /dev path, "
                             "rtsp:// or http:// URL, or a video file), not a TOML "
                             f"{'boolean' if isinstance(value, bool) else type(value).__name__}")
        return value

    @field_validator("source")
    @classmethod
    def _source_not_blank(cls, value: str | int) -> str | int:
        if isinstance(value, str) and not value.strip():
            raise ValueError("must be a device index, /dev path, rtsp:// or http:// URL, or a video file")
        if isinstance(value, int) and not 0 <= value <= MAX_DEVICE_INDEX:
            raise ValueError(f"a V4L2 device index must be 0 to {MAX_DEVICE_INDEX} (/dev/video0 to "
                             f"/dev/video{MAX_DEVICE_INDEX}); use the camera's /dev path")
        return value

    def resolved_kind(self) -> Literal["v4l2", "rtsp", "mjpeg", "file"]:
        """The source kind, guessed from the source when ``kind`` is ``auto``."""
        if self.kind != "auto":
            return self.kind
        if isinstance(parse_source(self.source), int) or str(self.source).startswith("/dev/"):
            return "v4l2"
        scheme = urlsplit(str(self.source)).scheme.lower()
        if scheme in ("rtsp", "rtsps"):
            return "rtsp"
        if scheme in ("http", "https"):
            return "mjpeg"
        return "file"


class MqttConfig(_Section):
    url: str | None = None
    prefix: str = Field("rclstm", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$", max_length=MAX_PREFIX)
    protocol: Literal["5", "3.1.1"] = "5"
    client_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    username: str | None = None
    password: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls_insecure: bool = False
    keepalive_s: int = Field(30, ge=5, le=3600)
    stats_interval_s: float = Field(60.0, ge=1.0, le=86400.0)
    snapshots: bool = False
    snapshot_max_bytes: int = Field(100_000, ge=1000, le=5_000_000)
    # Home Assistant MQTT discovery (opt-in): per camera an anomaly binary_sensor and a score sensor.
    homeassistant: bool = False
    discovery_prefix: str = Field("homeassistant", pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$",
                                  max_length=MAX_PREFIX)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://host:1883 or mqtts://host:8883")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("has a port that is not a number from 1 to 65535") from None
        if port == 0:
            raise ValueError("has port 0; use 1 to 65535 (1883 for mqtt://, 8883 for mqtts://) or leave it out")
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url or "").hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url or "")
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def tls(self) -> bool:
        return urlsplit(self.url or "").scheme == "mqtts"


class OutboxConfig(_Section):
    max_rows: int = Field(10_000, ge=1, le=10_000_000)
    max_bytes: int = Field(50_000_000, ge=1_000, le=10_000_000_000)
    flush_timeout_s: float = Field(10.0, ge=0.0, le=600.0)
    # How long an outbox that cannot be opened for a reason other than corruption (no space, no
    # inodes) is retried at start before the daemon exits 1 with one line saying why.
    open_retry_s: float = Field(60.0, ge=0.0, le=3600.0)


class ClipsConfig(_Section):
    """Incident clips kept on the device for retraining (off by default: they are video of people).

    Each incident keeps the sampled frames from ``pre_s`` before its start to its end (at most
    ``max_s``), ``width`` pixels wide, as a small video in ``state_dir/clips``; a camera that stayed
    below its threshold for ``calm_s`` gives a calm clip at most every ``calm_every_s`` as a
    negative example (0 turns calm clips off). The folder is kept under ``max_bytes`` and clips
    older than ``max_age_days`` are deleted, oldest first. The defaults keep a clip of a typical
    incident (15-30 s at the model's 10-15 frames per second, about 100 kB per 10 s at 256 pixels)
    for a month within 200 MB of an SD card.
    """

    enabled: bool = False
    pre_s: float = Field(5.0, ge=0.0, le=60.0)
    max_s: float = Field(60.0, gt=0.0, le=600.0)
    width: int = Field(256, ge=32, le=1280)
    calm_s: float = Field(10.0, gt=0.0, le=600.0)
    calm_every_s: float = Field(21600.0, ge=0.0, le=30 * 86400.0)
    max_bytes: int = Field(200_000_000, ge=100_000, le=100_000_000_000)
    max_age_days: float = Field(30.0, gt=0.0, le=3650.0)
    # No clip starts with less than this free on the disk: the outbox must still find room for events.
    min_free_bytes: int = Field(50_000_000, ge=0, le=100_000_000_000)


class Config(_Section):
    device_id: str = Field(default_factory=lambda: _default_device_id(), pattern=ID_PATTERN)
    site: str = Field("default", min_length=1, max_length=100)
    state_dir: Path = Path("/var/lib/rclstm-edge")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    model: ModelConfig = Field(default_factory=ModelConfig)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    clips: ClipsConfig = Field(default_factory=ClipsConfig)
    cameras: list[CameraConfig] = Field(default_factory=lambda: [CameraConfig(id="cam0", source=0)], min_length=1)

    @model_validator(mode="after")
    def _unique_cameras(self) -> Config:
        ids = [c.id for c in self.cameras]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"camera ids must be unique; repeated: {', '.join(duplicates)}")
        return self

    # Lines saying which keys were read from a deprecated place (see migrate_classifier_keys).
    _deprecations: list[str] = PrivateAttr(default_factory=list)

    @property
    def deprecations(self) -> list[str]:
        return list(self._deprecations)

    def decision_for(
        self, camera: CameraConfig, recommended: Mapping[str, float | int] | None = None
    ) -> DecisionConfig:
        """The device-wide decision settings with the camera's overrides applied.

        ``recommended`` (the model's own, from its manifest) replaces the built-in defaults for the
        keys the config does not set: a value an installer wrote, or `calibrate` chose, always wins.
        """
        return _layered(self.decision, recommended, camera.decision)

    def classifier_for(self, camera: CameraConfig, recommended: Mapping[str, int] | None = None) -> ClassifierConfig:
        """The device-wide classifier settings with the camera's overrides applied.

        ``recommended`` (the hop the model's decision settings were chosen at) replaces the built-in
        default for the keys the config does not set, as in ``decision_for``.
        """
        return _layered(self.classifier, recommended, camera.classifier)


def _layered(device: SectionT, recommended: Mapping[str, Any] | None, camera: BaseModel) -> SectionT:
    """Built-in defaults, then the model's ``recommended`` keys, then what the config set device-wide,
    then the camera's overrides: one precedence for every section a model may recommend keys of."""
    chosen = {**(recommended or {}), **device.model_dump(include=device.model_fields_set)}
    return type(device)(**chosen).model_copy(update=camera.model_dump(exclude_none=True))


def _default_device_id() -> str:
    name = "".join(ch if ch.isalnum() or ch in "_.-" else "-" for ch in socket.gethostname())[:64]
    return name.strip("-._") or "device"


def key_path(loc: tuple[int | str, ...]) -> str:
    """A validation error's location as ``a.b.0.c``; repr() for keys with line breaks or control
    characters (fuzzed files have them), so each problem stays on one line."""
    return ".".join(str(p) if str(p).isprintable() else repr(p) for p in loc)


def format_errors(exc: ValidationError) -> list[str]:
    """One line per problem: key path, the offending value and what is allowed."""
    lines = []
    for err in exc.errors():
        loc = key_path(err["loc"]) or "(top level)"
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" = {_shown(value)}"
        if err["type"] == "extra_forbidden":
            lines.append(f"{loc}{shown}: unknown key; remove it or check its spelling")
        elif err["type"] == "missing":
            lines.append(f"{loc}: required key is missing")
        else:
            lines.append(f"{loc}{shown}: {redact_secrets(err['msg'])}")
    return lines


def _shown(value: Any, limit: int = 80) -> str:
    """A rejected value for an error line: passwords in URLs hidden, long values cut."""
    text = redact_secrets(repr(value))
    return text if len(text) <= limit else f"{text[:limit]}... ({len(str(value))} characters)"


def load_config(path: Path | None) -> Config:
    """Read the TOML file (if any) and validate it once."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read the config file ({exc.strerror})"]) from None
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except UnicodeDecodeError:
            raise ConfigError([f"{path}: not UTF-8 text; save the config file as UTF-8"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: not valid TOML ({exc})"]) from None
    return validate_config(data)


def override(config: Config, changes: dict[str, Any]) -> Config:
    """The settings with ``changes`` (dotted keys to values, e.g. command-line flags) applied, validated
    again as a whole so a change is checked against the rest of the file."""
    data: dict[str, Any] = config.model_dump(exclude_unset=True)
    for dotted, value in changes.items():
        _set_dotted(data, dotted, value)
    result = validate_config(data)
    result._deprecations[:0] = config.deprecations  # the file's own notes still apply
    return result


def validate_config(data: dict[str, Any]) -> Config:
    """Validate parsed settings, turning pydantic's report into one line per problem."""
    data, notes, problems = migrate_classifier_keys(data)
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems + format_errors(exc)) from None
    if problems:
        raise ConfigError(problems)
    config._deprecations.extend(notes)
    return config


CLASSIFIER_KEYS = tuple(ClassifierConfig.model_fields)


def migrate_classifier_keys(data: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[str]]:
    """``hop`` and ``scene_cut`` moved from ``[decision]`` to ``[classifier]`` (and from a camera's
    ``[cameras.decision]`` to ``[cameras.classifier]``): installed configs keep working, read from the old
    place with one deprecation line per key; a key set in both places is an error, as neither can win
    silently. Returns a migrated copy, the deprecation lines and the problems."""
    notes: list[str] = []
    problems: list[str] = []
    out = dict(data)

    def move(section: dict[str, Any], where: str) -> dict[str, Any]:
        old, new = section.get("decision"), section.get("classifier", {})
        if not isinstance(old, dict) or not isinstance(new, dict):
            return section  # not tables: validation reports them
        moved = {key: old[key] for key in CLASSIFIER_KEYS if key in old}
        if not moved:
            return section
        section = dict(section)
        section["decision"] = {key: value for key, value in old.items() if key not in moved}
        section["classifier"] = {**new, **moved}
        for key, value in moved.items():
            if key in new:
                problems.append(f"{where}decision.{key} and {where}classifier.{key} are both set; "
                                f"keep {where}classifier.{key} only")
            else:
                notes.append(f"{where}decision.{key} = {_shown(value)} is deprecated there; move it to "
                             f"{where}classifier.{key} ([{'cameras.' if where else ''}classifier] table)")
        return section

    out = move(out, "")
    cameras = out.get("cameras")
    if isinstance(cameras, list):
        out["cameras"] = [move(c, f"cameras.{i}.") if isinstance(c, dict) else c for i, c in enumerate(cameras)]
    return out, notes, problems


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value


def resolve_password(mqtt: MqttConfig) -> str | None:
    """The MQTT password from, in order: environment, systemd credential, password_file, the config.

    Read as bytes and decoded strictly: a password that is not UTF-8 cannot be sent in an MQTT
    CONNECT, and is refused here in one line naming where it came from.
    """
    env = os.environb.get(PASSWORD_ENV.encode()) if os.supports_bytes_environ else None
    if env:
        return _utf8(env, f"${PASSWORD_ENV}")
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    credential = credential_path(PASSWORD_CREDENTIAL)
    if credential is not None:
        return _utf8(credential.read_bytes(), f"the systemd credential {PASSWORD_CREDENTIAL}").strip()
    if mqtt.password_file is not None:
        try:
            data = mqtt.password_file.read_bytes()
        except OSError as exc:
            problem = f"mqtt.password_file = '{mqtt.password_file}': cannot read it ({exc.strerror})"
            raise ConfigError([problem]) from None
        return _utf8(data, f"mqtt.password_file = '{mqtt.password_file}'").strip()
    return mqtt.password


def _utf8(data: bytes, where: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError([f"{where}: the password is not UTF-8 text; write it again as UTF-8"]) from None


def resolve_key_file(mqtt: MqttConfig) -> Path | None:
    """The TLS client key: a systemd credential wins over the configured path."""
    return credential_path(KEY_CREDENTIAL) or mqtt.key_file


def credential_path(name: str) -> Path | None:
    """A non-empty systemd credential file, or None.

    The unit always loads both credentials (systemd refuses to start a unit whose credential
    source is missing), so the installer writes an empty file for a secret that is not used;
    empty therefore means "not configured".
    """
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return None
    path = Path(directory) / name
    return path if path.is_file() and path.stat().st_size > 0 else None


def secret_exposure_warning(path: Path | None, mqtt: MqttConfig) -> str | None:
    """A warning when the config file holds a password and other users can read it."""
    if path is None or not mqtt.password:
        return None
    mode = Path(path).stat().st_mode
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return (
            f"{path} holds mqtt.password and is readable by other users; "
            f"chmod 600 it, or move the password to ${PASSWORD_ENV} or a systemd credential"
        )
    return None
