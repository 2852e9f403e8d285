"""The typed, frozen settings tree, its embedded defaults and the bounds each value keeps."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

CameraSource = Literal["auto", "picamera2", "synthetic", "file"]
PinFactoryName = Literal["auto", "mock", "lgpio", "rpigpio", "pigpio", "native"]
LogLevel = Literal["debug", "info", "warning", "error"]
# libcamera only flips the sensor readout, so 180 (both flips) is the one rotation it offers.
Rotation = Literal[0, 180]

DEFAULT_STATE_DIR = Path("/var/lib/doorbell")
DEFAULT_RUNTIME_DIR = Path("/run/doorbell")
DEFAULT_BUCKET = DEFAULT_STATE_DIR / "bucket"

# Keys older files may still hold: accepted with a warning that they do nothing.
RETIRED = {
    "gpio.button.hold_seconds": "nothing uses a held button",
}

# The key under which a field's `Rule` sits in its dataclass field metadata.
RULE = "doorbell.config.rule"


@dataclass(frozen=True)
class Rule:
    """What a value must satisfy beyond its type; the schema reader enforces it."""

    bounds: tuple[float, float] | None = None
    above: float | None = None
    even: bool = False
    max_length: int = 1024
    # Appended to a range message as it stands: " (BCM GPIO numbers ...)".
    hint: str = ""
    # Null or absent in the file: the loader derives the value from other settings.
    derived: bool = False


T = TypeVar("T")


def setting(default: T, rule: Rule) -> T:
    """A dataclass field with a default and the rule its configured value must keep."""
    return field(default=default, metadata={RULE: rule})


PIN = Rule(bounds=(2, 27), hint=" (BCM GPIO numbers on the 40-pin header)")


@dataclass(frozen=True)
class CameraSettings:
    """Where video comes from and how it is encoded."""

    source: CameraSource = "auto"
    file: Path | None = None
    width: int = setting(1280, Rule(bounds=(64, 4056), even=True))
    height: int = setting(720, Rule(bounds=(64, 3040), even=True))
    fps: int = setting(30, Rule(bounds=(1, 120)))
    bitrate: int = setting(2_000_000, Rule(bounds=(100_000, 50_000_000)))
    keyframe_seconds: float = setting(2.0, Rule(above=0))
    rotation: Rotation = 0
    hflip: bool = False
    vflip: bool = False
    snapshot_width: int = setting(640, Rule(bounds=(64, 1920)))
    realtime: bool = True


@dataclass(frozen=True)
class RecordingSettings:
    """How events become clips: segment length, pre/post roll, limits."""

    segment_seconds: float = setting(2.0, Rule(bounds=(0.5, 10)))
    pre_roll_seconds: float = setting(4.0, Rule(bounds=(0, 60)))
    post_roll_seconds: float = setting(10.0, Rule(bounds=(0, 600)))
    max_clip_seconds: float = setting(120.0, Rule(bounds=(1, 3600)))
    cooldown_seconds: float = setting(5.0, Rule(bounds=(0, 3600)))
    continuous: bool = False


@dataclass(frozen=True)
class ButtonSettings:
    """The doorbell push button."""

    pin: int = setting(17, PIN)
    pull_up: bool = True
    bounce_seconds: float | None = setting(0.05, Rule(bounds=(0, 1)))


@dataclass(frozen=True)
class MotionSettings:
    """The PIR motion sensor; `pin` None means there is none."""

    pin: int | None = setting(4, PIN)
    queue_len: int = setting(1, Rule(bounds=(1, 100)))
    threshold: float = setting(0.5, Rule(bounds=(0, 1)))
    sample_rate: float = setting(10.0, Rule(bounds=(1, 100)))


@dataclass(frozen=True)
class ChimeSettings:
    """The relay that rings the indoor chime; `pin` None means there is none."""

    pin: int | None = setting(27, PIN)
    active_high: bool = True
    pulse_seconds: float = setting(0.5, Rule(bounds=(0.05, 10)))


@dataclass(frozen=True)
class LedSettings:
    """The status LED; `pin` None means there is none."""

    pin: int | None = setting(22, PIN)


@dataclass(frozen=True)
class GpioSettings:
    """The gpiozero pin factory and the devices wired to the header."""

    pin_factory: PinFactoryName = "auto"
    button: ButtonSettings = field(default_factory=ButtonSettings)
    motion: MotionSettings = field(default_factory=MotionSettings)
    chime: ChimeSettings = field(default_factory=ChimeSettings)
    status_led: LedSettings = field(default_factory=LedSettings)


@dataclass(frozen=True)
class LocalSinkSettings:
    """The local-directory sink; `directory` defaults to ``<state_dir>/bucket``."""

    enabled: bool = True
    directory: Path = field(default=DEFAULT_BUCKET, metadata={RULE: Rule(derived=True)})


@dataclass(frozen=True)
class S3SinkSettings:
    """Any S3-compatible bucket; credentials from files or the environment."""

    enabled: bool = False
    endpoint: str = setting("s3.amazonaws.com", Rule(max_length=255))
    region: str = setting("us-east-1", Rule(max_length=64))
    bucket: str | None = setting(None, Rule(max_length=63))
    prefix: str | None = setting(None, Rule(max_length=512))
    secure: bool = True
    access_key_file: Path | None = None
    secret_key_file: Path | None = None


@dataclass(frozen=True)
class SinkSettings:
    """Where sealed objects are delivered."""

    local: LocalSinkSettings = field(default_factory=LocalSinkSettings)
    s3: S3SinkSettings = field(default_factory=S3SinkSettings)


@dataclass(frozen=True)
class SpoolSettings:
    """The on-disk outbox (``<state_dir>/spool``) every sealed object waits in."""

    quota_mb: int = setting(1024, Rule(bounds=(1, 1_000_000)))
    # Free space kept on the file system for events and notices: footage is evicted
    # before the disk gets fuller than this, so a ring always has room.
    reserve_mb: int = setting(8, Rule(bounds=(1, 1024)))


@dataclass(frozen=True)
class HomeAssistantSettings:
    """MQTT discovery for Home Assistant. It tells the broker about events in cleartext."""

    discovery: bool = False
    prefix: str = setting("homeassistant", Rule(max_length=128))


@dataclass(frozen=True)
class MqttSettings:
    """The MQTT broker that carries sealed events and the keyring to the phones."""

    enabled: bool = False
    host: str = setting("localhost", Rule(max_length=255))
    port: int = setting(1883, Rule(bounds=(1, 65535)))
    tls: bool = False
    ca_file: Path | None = None
    username: str | None = setting(None, Rule(max_length=256))
    password_file: Path | None = None
    topic_prefix: str = setting("doorbell", Rule(max_length=128))
    keepalive: int = setting(30, Rule(bounds=(5, 3600)))
    homeassistant: HomeAssistantSettings = field(default_factory=HomeAssistantSettings)


@dataclass(frozen=True)
class LiveSettings:
    """Live view: an enrolled phone that asks sees the camera now, sealed to it alone."""

    # The longest a session runs, however often the phone renews it.
    max_seconds: float = setting(300.0, Rule(bounds=(10, 3600)))
    # Sessions at once: each costs a sealed, signed copy of every frame on the uplink.
    max_viewers: int = setting(4, Rule(bounds=(1, 16)))
    # Whether guests may watch live too, not only owners and members.
    allow_guests: bool = False


@dataclass(frozen=True)
class LoggingSettings:
    """What the daemon logs."""

    level: LogLevel = "info"
    # Each ring and motion as a line in the journal, which outlives the footage on the
    # SD card and tells whoever holds the doorbell who came when. Counts stay in status.
    events: bool = False


@dataclass(frozen=True)
class Settings:
    """The whole configuration of one doorbell."""

    state_dir: Path = DEFAULT_STATE_DIR
    runtime_dir: Path = DEFAULT_RUNTIME_DIR
    device_name: str = setting("doorbell", Rule(max_length=64))
    camera: CameraSettings = field(default_factory=CameraSettings)
    recording: RecordingSettings = field(default_factory=RecordingSettings)
    gpio: GpioSettings = field(default_factory=GpioSettings)
    sinks: SinkSettings = field(default_factory=SinkSettings)
    spool: SpoolSettings = field(default_factory=SpoolSettings)
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    live: LiveSettings = field(default_factory=LiveSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)


def defaults() -> Settings:
    """The embedded defaults: what runs when there is no configuration file at all."""
    return Settings()
