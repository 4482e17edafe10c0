"""edge/config.py: TOML in, one line per problem out, secrets from env / credentials / files."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.core.config import (
    DEFAULT_HOP,
    PASSWORD_ENV,
    Config,
    ConfigError,
    DecisionConfig,
    MqttConfig,
    load_config,
    override,
    resolve_key_file,
    resolve_password,
    secret_exposure_warning,
)

VALID = """
device_id = "shop-12"
site = "Main street"

[model]
bundle = "builtin"

[mqtt]
url = "mqtts://broker.example:8884"
username = "shop-12"

[decision]
threshold = 0.6

[[cameras]]
id = "entrance"
source = "rtsp://10.0.0.5/stream1"

[[cameras]]
id = "till"
source = 0
decision = { threshold = 0.8 }
classifier = { hop = 2 }
"""


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)
    return path


def test_valid_file_with_per_camera_overrides(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, VALID))
    assert [c.id for c in config.cameras] == ["entrance", "till"]
    assert [c.resolved_kind() for c in config.cameras] == ["rtsp", "v4l2"]
    till = config.decision_for(config.cameras[1])
    assert (till.threshold, till.end_windows) == (0.8, config.decision.end_windows)
    assert (config.classifier_for(config.cameras[1]).hop, config.classifier_for(config.cameras[0]).hop) == (2, 4)
    assert config.deprecations == []
    assert config.decision_for(config.cameras[0]).threshold == 0.6
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == ("broker.example", 8884, True)


def test_no_file_gives_runnable_defaults() -> None:
    config = load_config(None)
    assert config.model.bundle == "builtin" and config.mqtt.url is None
    assert [(c.id, c.source) for c in config.cameras] == [("cam0", 0)]


def test_overrides_are_dotted_keys(tmp_path: Path) -> None:
    config = override(load_config(write(tmp_path, VALID)), {"mqtt.url": "mqtt://localhost", "classifier.hop": 8})
    assert (config.mqtt.port, config.mqtt.tls, config.classifier.hop) == (1883, False, 8)


OLD_LAYOUT = """
[decision]
threshold = 0.6
hop = 2
scene_cut = 0.9

[[cameras]]
id = "till"
source = 0
[cameras.decision]
threshold = 0.8
hop = 8
"""


def test_classifier_keys_under_decision_still_load_with_one_line_each(tmp_path: Path) -> None:
    """Configs written before [classifier] existed keep their meaning; each moved key is named once."""
    config = load_config(write(tmp_path, OLD_LAYOUT))
    till = config.cameras[0]
    assert (config.classifier.hop, config.classifier.scene_cut, config.classifier_for(till).hop) == (2, 0.9, 8)
    assert (config.decision.threshold, config.decision_for(till).threshold) == (0.6, 0.8)
    assert config.deprecations == [
        "decision.hop = 2 is deprecated there; move it to classifier.hop ([classifier] table)",
        "decision.scene_cut = 0.9 is deprecated there; move it to classifier.scene_cut ([classifier] table)",
        "cameras.0.decision.hop = 8 is deprecated there; move it to cameras.0.classifier.hop "
        "([cameras.classifier] table)",
    ]
    # A command-line override keeps the file's notes.
    assert override(config, {"site": "x"}).deprecations == config.deprecations


def test_a_classifier_key_in_both_places_is_one_error_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "[decision]\nhop = 2\n[classifier]\nhop = 3\n"))
    assert caught.value.problems == ["decision.hop and classifier.hop are both set; keep classifier.hop only"]


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ('colour = "red"', "colour = 'red': unknown key; remove it or check its spelling"),
        ("[decision]\nthreshold = 1.5", "decision.threshold = 1.5: Input should be less than or equal to 1"),
        ('[mqtt]\nurl = "http://x"', "mqtt.url = 'http://x': Value error, must look like mqtt://host:1883"),
        ('[mqtt]\nurl = "mqtt://x:abc"', "mqtt.url = 'mqtt://x:abc': Value error, has a port that is not a number"),
        ('[mqtt]\nprotocol = "4"', "mqtt.protocol = '4': Input should be '5' or '3.1.1'"),
        ('[mqtt]\nkeepalive_s = 1', "mqtt.keepalive_s = 1: Input should be greater than or equal to 5"),
        ('[[cameras]]\nid = "bad id"\nsource = 0', "cameras.0.id = 'bad id': String should match pattern"),
        ('[[cameras]]\nid = "a"', "cameras.0.source: required key is missing"),
        ('[[cameras]]\nid = "a"\nsource = "  "', "cameras.0.source = '  ': Value error, must be a device index"),
        ('[[cameras]]\nid = "a"\nsource = 0\nkind = "usb"', "cameras.0.kind = 'usb': Input should be"),
        ('[[cameras]]\nid = "a"\nsource = 0\ndecoder_threads = 0',
         "cameras.0.decoder_threads = 0: Input should be greater than or equal to 1"),
        ('[[cameras]]\nid = "a"\nsource = 0\ndecoder_threads = "two"',
         "cameras.0.decoder_threads = 'two': Input should be a valid integer"),
        ('[[cameras]]\nid = "a"\nsource = 0\n[[cameras]]\nid = "a"\nsource = 1',
         "(top level): Value error, camera ids must be unique; repeated: a"),
        ('log_level = "loud"', "log_level = 'loud': Input should be 'debug', 'info', 'warning' or 'error'"),
        ("[outbox]\nmax_rows = 0", "outbox.max_rows = 0: Input should be greater than or equal to 1"),
    ],
)
def test_each_bad_key_is_one_line_naming_it(tmp_path: Path, snippet: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, snippet))
    assert len(err.value.problems) == 1, err.value.problems
    assert err.value.problems[0].startswith(expected), err.value.problems[0]
    assert "\n" not in err.value.problems[0]


def test_several_problems_are_all_reported(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, 'typo = 1\n[decision]\nhop = 0\nend_windows = -1'))
    assert len(err.value.problems) == 3


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"device_id = ", "not valid TOML"),
        (b"site = '\xff\xfe'", "not UTF-8 text"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert err.value.problems[0].startswith(f"{path}: {expected}")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.toml")
    assert err.value.problems == [f"{tmp_path / 'nope.toml'}: cannot read the config file (No such file or directory)"]


def test_password_sources_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    secret_file = tmp_path / "pw"
    secret_file.write_text("from-file\n")
    mqtt = MqttConfig(password="from-config", password_file=secret_file)
    assert resolve_password(mqtt) == "from-file"
    assert resolve_password(MqttConfig(password="from-config")) == "from-config"
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt-password").write_text("")  # the installer's "not configured"
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert resolve_password(mqtt) == "from-file"
    (creds / "mqtt-password").write_text("from-credential\n")
    assert resolve_password(mqtt) == "from-credential"
    monkeypatch.setenv(PASSWORD_ENV, "from-env")
    assert resolve_password(mqtt) == "from-env"


def test_unreadable_password_file_names_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    with pytest.raises(ConfigError) as err:
        resolve_password(MqttConfig(password_file=tmp_path / "missing"))
    assert err.value.problems[0].startswith(f"mqtt.password_file = '{tmp_path / 'missing'}': cannot read it")


def test_key_credential_wins_over_the_configured_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    mqtt = MqttConfig(key_file=tmp_path / "client.key")
    assert resolve_key_file(mqtt) == tmp_path / "client.key"
    (tmp_path / "mqtt-key").write_text("-----BEGIN PRIVATE KEY-----\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert resolve_key_file(mqtt) == tmp_path / "mqtt-key"


def test_secret_exposure_warning(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\npassword = "pw-in-file"')
    config = load_config(path)
    assert secret_exposure_warning(path, config.mqtt) is None
    path.chmod(0o644)
    warning = secret_exposure_warning(path, config.mqtt)
    assert warning is not None and "chmod 600" in warning and "pw-in-file" not in warning
    assert secret_exposure_warning(path, Config().mqtt) is None


@pytest.mark.parametrize(
    ("source", "kind"),
    [(0, "v4l2"), ("2", "v4l2"), ("/dev/video1", "v4l2"), ("rtsp://h/s", "rtsp"), ("http://h/mjpg", "mjpeg"),
     ("/data/clip.mp4", "file")],
)
def test_source_kind_is_guessed(source: str | int, kind: str) -> None:
    config = Config.model_validate({"cameras": [{"id": "c", "source": source}]})
    assert config.cameras[0].resolved_kind() == kind


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300) | st.text(alphabet="[]=\"'.#\n abcdehimnoprstuvw_0123456789-", max_size=300))
def test_any_file_is_a_config_or_a_config_error(tmp_path: Path, content: bytes | str) -> None:
    """Fuzzed files never produce a traceback: either a valid config or one line per problem."""
    path = tmp_path / "fuzz.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    try:
        assert isinstance(load_config(path), Config)
    except ConfigError as exc:
        assert exc.problems and all(p and "\n" not in p for p in exc.problems)


def test_a_models_recommended_decision_fills_only_what_the_config_leaves_unset(tmp_path: Path) -> None:
    """The bundle's own threshold replaces the built-in default, never a value the installer wrote."""
    recommended = {"threshold": 0.55, "start_windows": 2}
    plain = load_config(None)
    camera = plain.cameras[0]
    chosen = plain.decision_for(camera, recommended)
    assert (chosen.threshold, chosen.start_windows, chosen.end_windows) == (0.55, 2, DecisionConfig().end_windows)
    assert plain.decision_for(camera) == DecisionConfig()
    path = tmp_path / "config.toml"
    path.write_text("[decision]\nthreshold = 0.8\n\n[[cameras]]\nid = \"door\"\nsource = 0\n[cameras.decision]\n"
                    "start_windows = 4\n")
    written = load_config(path)
    chosen = written.decision_for(written.cameras[0], recommended)
    assert (chosen.threshold, chosen.start_windows) == (0.8, 4)


def test_a_models_recommended_hop_applies_unless_the_config_sets_one(tmp_path: Path) -> None:
    """A model's decision settings were chosen at its hop; a hop the installer wrote still wins, per camera too."""
    plain = load_config(None)
    assert plain.classifier_for(plain.cameras[0], {"hop": 2}).hop == 2
    assert plain.classifier_for(plain.cameras[0]).hop == DEFAULT_HOP
    path = tmp_path / "config.toml"
    path.write_text("[classifier]\nhop = 6\n\n[[cameras]]\nid = \"door\"\nsource = 0\n\n"
                    "[[cameras]]\nid = \"till\"\nsource = 1\n[cameras.classifier]\nhop = 8\n")
    written = load_config(path)
    assert [written.classifier_for(c, {"hop": 2}).hop for c in written.cameras] == [6, 8]
    path.write_text("[[cameras]]\nid = \"till\"\nsource = 1\n[cameras.classifier]\nhop = 8\n")
    assert load_config(path).classifier_for(load_config(path).cameras[0], {"hop": 2}).hop == 8
