"""The configuration: the shipped file, defaults, every kind of mistake, and secret files."""

from __future__ import annotations

import dataclasses
import os
import textwrap
from pathlib import Path
from typing import Any, NamedTuple, get_args

import pytest
import yaml

from doorbell.config import (
    ConfigError,
    ConfigIssue,
    PinFactoryName,
    Settings,
    check_config,
    defaults,
    load_settings,
    read_secret,
)

SHIPPED = Path(__file__).resolve().parent.parent / "config" / "doorbell.yaml"


def write(tmp_path: Path, text: str, *, writable_dirs: bool = True) -> Path:
    """`text` as ``doorbell.yaml`` in `tmp_path`; ``{tmp}`` in it stands for `tmp_path`.

    Unless the text sets them, state_dir and runtime_dir are appended (after every line
    a test counts) pointing into `tmp_path`, so no result depends on /var/lib or /run.
    """
    (tmp_path / "regular").write_text("a file, not a directory\n")
    text = textwrap.dedent(text).replace("{tmp}", str(tmp_path))
    if writable_dirs:
        for key in ("state_dir", "runtime_dir"):
            if f"{key}:" not in text:
                text += f"\n{key}: {tmp_path / key}"
    path = tmp_path / "doorbell.yaml"
    path.write_text(text)
    return path


# --- the shipped file and the defaults -------------------------------------------------


# The default state_dir and runtime_dir are checked for writability: only root passes.
needs_default_dirs = pytest.mark.skipif(
    not (os.access("/var/lib", os.W_OK) and os.access("/run", os.W_OK)),
    reason="the default state_dir and runtime_dir are only creatable by root",
)


@needs_default_dirs
def test_the_shipped_file_is_the_defaults() -> None:
    assert check_config(SHIPPED) == []
    assert load_settings(SHIPPED) == defaults()


def _fields(cls: Any, prefix: str = "") -> set[str]:
    paths = set()
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        paths.add(path)
        if dataclasses.is_dataclass(f.default_factory):
            paths |= _fields(f.default_factory, f"{path}.")
    return paths


def _keys(node: Any, prefix: str = "") -> set[str]:
    paths = set()
    for key, value in node.items():
        paths.add(f"{prefix}{key}")
        if isinstance(value, dict):
            paths |= _keys(value, f"{prefix}{key}.")
    return paths


def test_the_shipped_file_sets_every_key_with_a_comment() -> None:
    text = SHIPPED.read_text()
    assert _keys(yaml.safe_load(text)) == _fields(Settings)
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if line.strip() and not line.lstrip().startswith("#"):
            above = lines[number - 1].strip()
            assert above.startswith("#"), f"line {number + 1} has no comment: {line!r}"


def test_no_file_means_the_embedded_defaults() -> None:
    assert load_settings(None) == defaults() == Settings()
    assert defaults().sinks.local.directory == defaults().state_dir / "bucket"


@needs_default_dirs
@pytest.mark.parametrize("text", ["", "# nothing set yet\n", "~\n", "camera:\ngpio:\n"])
def test_an_empty_file_means_the_defaults(tmp_path: Path, text: str) -> None:
    assert load_settings(write(tmp_path, text, writable_dirs=False)) == defaults()


def test_settings_are_typed_and_frozen(tmp_path: Path) -> None:
    settings = load_settings(
        write(
            tmp_path,
            """\
            camera:
              keyframe_seconds: 1
            recording:
              max_clip_seconds: 60
            gpio:
              button:
                bounce_seconds: null
              motion:
                pin: null
                sample_rate: 20
            """,
        )
    )
    assert settings.camera.keyframe_seconds == 1.0
    assert type(settings.camera.keyframe_seconds) is float
    assert type(settings.recording.max_clip_seconds) is float
    assert type(settings.gpio.motion.sample_rate) is float
    assert settings.gpio.button.bounce_seconds is None
    assert settings.gpio.motion.pin is None
    assert isinstance(settings.state_dir, Path)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.camera.fps = 60  # type: ignore[misc]


def test_the_sink_directory_follows_state_dir_or_is_relative_to_the_file(tmp_path: Path) -> None:
    derived = load_settings(write(tmp_path, "state_dir: {tmp}/elsewhere\n"))
    assert derived.sinks.local.directory == tmp_path / "elsewhere" / "bucket"

    explicit = load_settings(write(tmp_path, "sinks:\n  local:\n    directory: clips\n"))
    assert explicit.sinks.local.directory == tmp_path / "clips"


def test_a_file_source_names_a_readable_file(tmp_path: Path) -> None:
    (tmp_path / "door.mp4").write_bytes(b"not really video")
    settings = load_settings(write(tmp_path, "camera:\n  source: file\n  file: door.mp4\n"))
    assert settings.camera.source == "file"
    assert settings.camera.file == tmp_path / "door.mp4"


def test_merge_keys_may_override_without_a_duplicate_complaint(tmp_path: Path) -> None:
    merged = write(
        tmp_path,
        """\
        gpio:
          chime:
            <<: {pin: 6, active_high: false}
            pin: 7
        """,
    )
    chime = load_settings(merged).gpio.chime
    assert (chime.pin, chime.active_high) == (7, False)

    # A merged key is read where the anchor wrote it, and reported there.
    misfit = write(
        tmp_path,
        """\
        gpio:
          button: &wired
            pin: 5
            pull_up: false
          chime:
            <<: *wired
            pin: 6
        """,
    )
    issues = check_config(misfit)
    assert [(issue.path, issue.line) for issue in issues] == [("gpio.chime.pull_up", 4)]
    assert "unknown key 'pull_up'" in issues[0].message


def test_event_lines_in_the_log_are_opt_in(tmp_path: Path) -> None:
    assert defaults().logging.events is False
    assert load_settings(write(tmp_path, "logging:\n  events: true\n")).logging.events is True


def test_a_retired_key_is_accepted_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, "gpio:\n  button:\n    hold_seconds: 2.5\n")
    assert check_config(path) == []
    assert load_settings(path).gpio.button == defaults().gpio.button
    warned = [r.getMessage() for r in caplog.records if "hold_seconds" in r.getMessage()]
    assert warned and all("ignored" in line and "can be removed" in line for line in warned)
    assert f"{path}:3: gpio.button.hold_seconds" in warned[0]


@pytest.mark.parametrize(
    "text",
    [
        "camera: " + "{a: " * 40 + "1" + "}" * 40 + "\n",
        "camera: " + "[" * 40 + "]" * 40 + "\n",
        "camera:\n" + "".join(" " * (2 * level) + "  -\n" for level in range(40)),
    ],
    ids=["flow mapping", "flow sequence", "block sequence"],
)
def test_nesting_beyond_the_limit_is_one_issue(tmp_path: Path, text: str) -> None:
    issues = check_config(write(tmp_path, text))
    assert len(issues) == 1 and issues[0].path == "" and issues[0].line is not None, issues
    assert "nested deeper than 32 levels" in issues[0].message


def test_the_pin_factory_names_are_those_gpio_accepts() -> None:
    from doorbell.events.sensors import FACTORY_NAMES

    assert set(get_args(PinFactoryName)) == set(FACTORY_NAMES)


# --- one broken config, one issue ------------------------------------------------------


class Broken(NamedTuple):
    text: str
    path: str
    line: int | None
    fragment: str
    writable_dirs: bool = True


BROKEN = {
    "typo with suggestion": Broken(
        "recording:\n  pre_roll_seconds: 2\n  post_rol_seconds: 3\n",
        "recording.post_rol_seconds",
        3,
        "unknown key 'post_rol_seconds'; did you mean 'post_roll_seconds'?",
    ),
    "top-level typo": Broken("devce_name: porch\n", "devce_name", 1, "did you mean 'device_name'?"),
    "nested section typo": Broken(
        "gpio:\n  buton:\n    pin: 5\n", "gpio.buton", 2, "did you mean 'button'?"
    ),
    "unknown key, nothing close": Broken(
        "camera:\n  zoom: 2\n", "camera.zoom", 2, "unknown key 'zoom'; expected one of: source"
    ),
    "bool is not an int": Broken(
        "camera:\n  fps: true\n", "camera.fps", 2, "expected an integer, got boolean true"
    ),
    "float is not an int": Broken(
        "camera:\n  width: 1280.5\n", "camera.width", 2, "expected an integer, got number 1280.5"
    ),
    "text is not a number": Broken(
        "recording:\n  pre_roll_seconds: soon\n",
        "recording.pre_roll_seconds",
        2,
        "expected a number, got string 'soon'",
    ),
    "null where not allowed": Broken(
        "gpio:\n  button:\n    pin: null\n", "gpio.button.pin", 3, "expected an integer, got null"
    ),
    "int is not a bool": Broken(
        "camera:\n  hflip: 1\n", "camera.hflip", 2, "expected true or false, got integer 1"
    ),
    "a bare word YAML reads as a bool": Broken(
        "device_name: no\n", "device_name", 1, "got boolean no; quote it ('no')"
    ),
    "mapping where text belongs": Broken(
        "device_name:\n  first: porch\n", "device_name", 2, "expected a string, got a mapping"
    ),
    "scalar where a section belongs": Broken(
        "camera: picamera2\n", "camera", 1, "expected a mapping of settings, got string"
    ),
    "number above range": Broken(
        "camera:\n  width: 5000\n", "camera.width", 2, "must be between 64 and 4056, got 5000"
    ),
    "odd height": Broken("camera:\n  height: 721\n", "camera.height", 2, "must be even, got 721"),
    "zero keyframe interval": Broken(
        "camera:\n  keyframe_seconds: 0\n",
        "camera.keyframe_seconds",
        2,
        "must be greater than 0, got 0.0",
    ),
    "bounce out of range": Broken(
        "gpio:\n  button:\n    bounce_seconds: 2\n",
        "gpio.button.bounce_seconds",
        3,
        "must be between 0 and 1, got 2.0",
    ),
    "not a number": Broken(
        "gpio:\n  motion:\n    threshold: .nan\n",
        "gpio.motion.threshold",
        3,
        "must be a finite number",
    ),
    "rotation not 0 or 180": Broken(
        "camera:\n  rotation: 90\n", "camera.rotation", 2, "must be one of 0, 180, got integer 90"
    ),
    "pin out of range": Broken(
        "gpio:\n  motion:\n    pin: 40\n",
        "gpio.motion.pin",
        3,
        "must be between 2 and 27 (BCM GPIO numbers on the 40-pin header), got 40",
    ),
    "pin used twice": Broken(
        "gpio:\n  button:\n    pin: 5\n  chime:\n    pin: 5\n",
        "gpio.chime.pin",
        5,
        "pin 5 is already used by gpio.button.pin",
    ),
    "pin taken from a default": Broken(
        "gpio:\n  button:\n    pin: 27\n",
        "gpio.button.pin",
        3,
        "pin 27 is already used by gpio.chime.pin (its default)",
    ),
    "post-roll longer than the longest clip": Broken(
        "recording:\n  post_roll_seconds: 300\n",
        "recording.post_roll_seconds",
        2,
        "must be at most max_clip_seconds (120.0), got 300.0",
    ),
    "longest clip shorter than the post-roll": Broken(
        "recording:\n  max_clip_seconds: 5\n",
        "recording.max_clip_seconds",
        2,
        "must be at least post_roll_seconds (10.0), got 5.0",
    ),
    "segment not a multiple of the keyframe interval": Broken(
        "recording:\n  segment_seconds: 3\n",
        "recording.segment_seconds",
        2,
        "must be a whole multiple of camera.keyframe_seconds (2.0), got 3.0",
    ),
    "keyframe interval not whole frames": Broken(
        "camera:\n  keyframe_seconds: 0.5\n  fps: 25\n",
        "camera.keyframe_seconds",
        2,
        "keyframe_seconds * fps must be a whole number of frames, got 0.5 * 25 = 12.5",
    ),
    "unknown source with suggestion": Broken(
        "camera:\n  source: picam\n",
        "camera.source",
        2,
        "must be one of auto, picamera2, synthetic, file, got string 'picam'; "
        "did you mean 'picamera2'?",
    ),
    "log level in capitals": Broken(
        "logging:\n  level: INFO\n", "logging.level", 2, "did you mean 'info'?"
    ),
    "file source without a file": Broken(
        "camera:\n  fps: 30\n  source: file\n",
        "camera.file",
        3,
        "required when camera.source is 'file'",
    ),
    "file source with a missing file": Broken(
        "camera:\n  source: file\n  file: missing.mp4\n",
        "camera.file",
        3,
        "no such file: ",
    ),
    "duplicate key": Broken(
        "recording:\n  post_roll_seconds: 5\n  pre_roll_seconds: 2\n  post_roll_seconds: 6\n",
        "recording.post_roll_seconds",
        4,
        "duplicate key 'post_roll_seconds' (first on line 2)",
    ),
    "duplicate section": Broken(
        "camera:\n  fps: 30\nlogging:\n  level: info\ncamera:\n  fps: 15\n",
        "camera",
        5,
        "duplicate key 'camera' (first on line 1)",
    ),
    "YAML syntax error": Broken(
        "camera:\n  source: [auto\n  fps: 30\n",
        "",
        3,
        "invalid YAML (column 6): while parsing a flow sequence",
        writable_dirs=False,
    ),
    "a list, not a mapping": Broken(
        "- camera\n- gpio\n",
        "",
        1,
        "expected a mapping of settings, got a list",
        writable_dirs=False,
    ),
    "text, not a mapping": Broken(
        "just some words\n",
        "",
        1,
        "expected a mapping of settings, got string 'just some words'",
        writable_dirs=False,
    ),
    "state dir under a regular file": Broken(
        "state_dir: {tmp}/regular/state\n",
        "state_dir",
        1,
        "regular is not a directory",
    ),
    "runtime dir is a regular file": Broken(
        "runtime_dir: {tmp}/regular\n", "runtime_dir", 1, "exists and is not a directory"
    ),
    "sink directory under a regular file": Broken(
        "sinks:\n  local:\n    directory: regular/bucket\n",
        "sinks.local.directory",
        3,
        "regular is not a directory",
    ),
    "empty path": Broken("state_dir: ''\n", "state_dir", 1, "expected a path, got ''"),
    "empty device name": Broken(
        "device_name: ''\n", "device_name", 1, "must be 1 to 64 printable characters"
    ),
    "device name too long": Broken(
        f"device_name: {'x' * 65}\n", "device_name", 1, "must be 1 to 64 printable characters"
    ),
    "a tag that would build an object": Broken(
        "device_name: !!python/name:os.system ''\n",
        "device_name",
        1,
        "could not determine a constructor",
    ),
    "a key that is not text": Broken("17: button\n", "", 1, "keys must be text, got integer 17"),
    "no sink keeps the video": Broken(
        "sinks:\n  local:\n    enabled: false\n",
        "sinks.local.enabled",
        3,
        "no sink keeps the video",
    ),
    "s3 without a bucket": Broken(
        "sinks:\n  s3:\n    enabled: true\n", "sinks.s3.bucket", 3, "bucket name"
    ),
    "mqtt password without a user": Broken(
        "mqtt:\n  enabled: true\n  password_file: /etc/hostname\n",
        "mqtt.password_file",
        3,
        "needs mqtt.username",
    ),
    "mqtt prefix with a wildcard": Broken(
        "mqtt:\n  enabled: true\n  topic_prefix: door/#\n",
        "mqtt.topic_prefix",
        3,
        "without wildcards",
    ),
}


@pytest.mark.parametrize("case", BROKEN.values(), ids=BROKEN.keys())
def test_a_broken_config_names_the_key_and_line(tmp_path: Path, case: Broken) -> None:
    path = write(tmp_path, case.text, writable_dirs=case.writable_dirs)
    issues = check_config(path)
    assert [(issue.path, issue.line) for issue in issues] == [(case.path, case.line)], issues
    assert case.fragment in issues[0].message
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert raised.value.issues == issues


def test_every_problem_in_a_file_is_reported(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        device_name: porch
        camera:
          source: picam
          widht: 640
          fps: 0
        recording:
          post_roll_seconds: 300
        gpio:
          chime:
            pin: 17
          status_led:
            pin: 99
        logging:
          level: loud
        """,
    )
    issues = check_config(path)
    assert [(issue.path, issue.line) for issue in issues] == [
        ("camera.source", 3),
        ("camera.widht", 4),
        ("camera.fps", 5),
        ("recording.post_roll_seconds", 7),
        ("gpio.chime.pin", 10),
        ("gpio.status_led.pin", 12),
        ("logging.level", 14),
    ]
    with pytest.raises(ConfigError) as raised:
        load_settings(path)
    assert raised.value.issues == issues
    lines = str(raised.value).splitlines()
    assert lines == [str(issue) for issue in issues]
    assert lines[3] == (
        f"{path}:7: recording.post_roll_seconds: must be at most max_clip_seconds (120.0), "
        "got 300.0"
    )


def test_a_missing_or_undecodable_file_is_one_issue(tmp_path: Path) -> None:
    missing = tmp_path / "absent.yaml"
    assert check_config(missing) == [
        ConfigIssue("", None, "cannot read the file: No such file or directory", missing)
    ]
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"device_name: caf\xe9\n")
    [issue] = check_config(latin)
    assert (issue.line, issue.message) == (1, "not UTF-8 text: byte 0xe9")


def test_an_issue_reads_like_a_compiler_message() -> None:
    file = Path("doorbell.yaml")
    assert str(ConfigIssue("a.b", 12, "wrong", file)) == "doorbell.yaml:12: a.b: wrong"
    assert str(ConfigIssue("a.b", None, "wrong", file)) == "doorbell.yaml: a.b: wrong"
    assert str(ConfigIssue("", 3, "wrong", file)) == "doorbell.yaml:3: wrong"
    assert str(ConfigIssue("a.b", 12, "wrong")) == "line 12: a.b: wrong"


# --- secrets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "secret"),
    [
        ("hunter2", "hunter2"),
        ("hunter2\n", "hunter2"),
        ("hunter2\r\n", "hunter2"),
        ("hunter2\n\n", "hunter2\n"),
        ("  spaced  \n", "  spaced  "),
    ],
)
def test_a_secret_loses_one_trailing_newline(tmp_path: Path, content: str, secret: str) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content.encode())
    assert read_secret(path, "mqtt.password_file") == secret


def test_an_unreadable_secret_names_its_key(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    undecodable = tmp_path / "binary"
    undecodable.write_bytes(b"\xff\xfe")
    for path, fragment in [
        (tmp_path / "absent", "No such file or directory"),
        (tmp_path, "Is a directory"),
        (empty, "is empty"),
        (undecodable, "is not UTF-8 text"),
    ]:
        with pytest.raises(ConfigError) as raised:
            read_secret(path, "mqtt.password_file")
        [issue] = raised.value.issues
        assert issue.path == "mqtt.password_file"
        assert fragment in issue.message
        assert str(path) in issue.message
        assert str(raised.value).startswith("mqtt.password_file: ")
