"""Configuration: one YAML file, read safely and checked into typed, frozen settings.

`load_settings` is what the daemon calls; `check_config` lists every problem for
``doorbell check-config``; `read_secret` reads the file a ``*_file`` key names.
"""

from doorbell.config.errors import ConfigError, ConfigIssue
from doorbell.config.load import DEFAULT_CONFIG_PATH, check_config, load_settings
from doorbell.config.secret import read_secret
from doorbell.config.settings import (
    ButtonSettings,
    CameraSettings,
    CameraSource,
    ChimeSettings,
    GpioSettings,
    HomeAssistantSettings,
    LedSettings,
    LocalSinkSettings,
    LoggingSettings,
    LogLevel,
    MotionSettings,
    MqttSettings,
    PinFactoryName,
    RecordingSettings,
    Rotation,
    S3SinkSettings,
    Settings,
    SinkSettings,
    SpoolSettings,
    defaults,
)

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "ButtonSettings",
    "CameraSettings",
    "CameraSource",
    "ChimeSettings",
    "ConfigError",
    "ConfigIssue",
    "GpioSettings",
    "HomeAssistantSettings",
    "LedSettings",
    "LocalSinkSettings",
    "LogLevel",
    "LoggingSettings",
    "MotionSettings",
    "MqttSettings",
    "PinFactoryName",
    "RecordingSettings",
    "Rotation",
    "S3SinkSettings",
    "Settings",
    "SinkSettings",
    "SpoolSettings",
    "check_config",
    "defaults",
    "load_settings",
    "read_secret",
]
