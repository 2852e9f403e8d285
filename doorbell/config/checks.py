"""Checks that span several settings or look at this machine: timing, pins, files, directories."""

from __future__ import annotations

import os
from pathlib import Path

from doorbell.common.topics import valid_prefix
from doorbell.config.schema import Reading
from doorbell.config.settings import Settings


def check_settings(settings: Settings, reading: Reading) -> None:
    """Add to `reading` every inconsistency between settings the schema accepted one by one."""
    _keyframes(settings, reading)
    _clip_length(settings, reading)
    _pins(settings, reading)
    _camera_file(settings, reading)
    _directories(settings, reading)
    _s3(settings, reading)
    _mqtt(settings, reading)
    _some_sink_keeps_video(settings, reading)


def _whole(value: float) -> bool:
    return round(value) >= 1 and abs(value - round(value)) <= 1e-9 * max(1.0, abs(value))


def _keyframes(settings: Settings, reading: Reading) -> None:
    keyframe, fps = settings.camera.keyframe_seconds, settings.camera.fps
    if reading.accepted("camera.keyframe_seconds", "camera.fps") and not _whole(keyframe * fps):
        path = reading.blame("camera.keyframe_seconds", "camera.fps")
        reading.add(
            path,
            reading.lines.get(path),
            f"keyframe_seconds * fps must be a whole number of frames, "
            f"got {keyframe!r} * {fps} = {keyframe * fps:g}",
        )
    segment = settings.recording.segment_seconds
    # The segmenter cuts only at keyframes, so a segment must hold whole keyframe intervals.
    if reading.accepted("recording.segment_seconds", "camera.keyframe_seconds") and not _whole(
        segment / keyframe
    ):
        path = reading.blame("recording.segment_seconds", "camera.keyframe_seconds")
        message = (
            f"must be a whole multiple of camera.keyframe_seconds ({keyframe!r}), got {segment!r}"
            if path == "recording.segment_seconds"
            else f"must divide recording.segment_seconds ({segment!r}) evenly, got {keyframe!r}"
        )
        reading.add(path, reading.lines.get(path), message)


def _clip_length(settings: Settings, reading: Reading) -> None:
    post, longest = settings.recording.post_roll_seconds, settings.recording.max_clip_seconds
    paths = ("recording.post_roll_seconds", "recording.max_clip_seconds")
    if not reading.accepted(*paths) or post <= longest:
        return
    path = reading.blame(*paths)
    message = (
        f"must be at most max_clip_seconds ({longest!r}), got {post!r}"
        if path == paths[0]
        else f"must be at least post_roll_seconds ({post!r}), got {longest!r}"
    )
    reading.add(path, reading.lines.get(path), message)


def _pins(settings: Settings, reading: Reading) -> None:
    gpio = settings.gpio
    wired = {
        "gpio.button.pin": gpio.button.pin,
        "gpio.motion.pin": gpio.motion.pin,
        "gpio.chime.pin": gpio.chime.pin,
        "gpio.status_led.pin": gpio.status_led.pin,
    }
    owner: dict[int, str] = {}
    for path, pin in wired.items():
        if pin is None or not reading.accepted(path):
            continue
        if pin not in owner:
            owner[pin] = path
            continue
        first = owner[pin]
        if path in reading.lines or first not in reading.lines:
            reading.add(path, reading.lines.get(path), f"pin {pin} is already used by {first}")
        else:
            reading.add(
                first,
                reading.lines[first],
                f"pin {pin} is already used by {path} (its default); "
                f"set {path} to another pin, or null if nothing is wired there",
            )


def _camera_file(settings: Settings, reading: Reading) -> None:
    camera = settings.camera
    if camera.source != "file" or not reading.accepted("camera.source", "camera.file"):
        return
    path = "camera.file"
    if camera.file is None:
        line = reading.lines.get(path, reading.lines.get("camera.source"))
        reading.add(path, line, "required when camera.source is 'file'")
    elif not camera.file.is_file():
        reading.add(path, reading.lines.get(path), f"no such file: {camera.file}")
    elif not os.access(camera.file, os.R_OK):
        reading.add(path, reading.lines.get(path), f"not readable by this user: {camera.file}")


def _directories(settings: Settings, reading: Reading) -> None:
    sink = "sinks.local.directory"
    for path, directory in (
        ("state_dir", settings.state_dir),
        ("runtime_dir", settings.runtime_dir),
        (sink, settings.sinks.local.directory),
    ):
        # A sink left to default lives in the state directory: one report is enough.
        if path == sink and sink not in reading.given and "state_dir" in reading.refused:
            continue
        if not reading.accepted(path):
            continue
        problem = unwritable(directory)
        if problem is not None:
            reading.add(path, reading.lines.get(path), problem)
            reading.refused.add(path)


def unwritable(directory: Path) -> str | None:
    """Why this user could not create or write `directory`, or None if it can."""
    if directory.exists():
        if not directory.is_dir():
            return f"{directory} exists and is not a directory"
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"{directory} is not writable by this user"
        return None
    ancestor = next(parent for parent in directory.parents if parent.exists())
    if not ancestor.is_dir():
        return f"cannot create {directory}: {ancestor} is not a directory"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"cannot create {directory}: {ancestor} is not writable by this user"
    return None


def _s3(settings: Settings, reading: Reading) -> None:
    s3 = settings.sinks.s3
    if not s3.enabled or not reading.accepted("sinks.s3.enabled"):
        return
    if s3.bucket is None or not 3 <= len(s3.bucket) <= 63:
        path = "sinks.s3.bucket"
        line = reading.lines.get(path, reading.lines.get("sinks.s3.enabled"))
        reading.add(
            path, line, f"a bucket name of 3 to 63 characters is required, got {s3.bucket!r}"
        )
    if not s3.endpoint or "/" in s3.endpoint:
        path = "sinks.s3.endpoint"
        reading.add(
            path, reading.lines.get(path), f"must be host or host:port, got {s3.endpoint!r}"
        )
    _secret_files(
        reading,
        ("sinks.s3.access_key_file", s3.access_key_file),
        ("sinks.s3.secret_key_file", s3.secret_key_file),
    )
    if (s3.access_key_file is None) != (s3.secret_key_file is None):
        path = reading.blame("sinks.s3.access_key_file", "sinks.s3.secret_key_file")
        reading.add(
            path,
            reading.lines.get(path),
            "set both access_key_file and secret_key_file, or neither "
            "(then AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are used)",
        )


def _mqtt(settings: Settings, reading: Reading) -> None:
    mqtt = settings.mqtt
    if not mqtt.enabled or not reading.accepted("mqtt.enabled"):
        return
    _secret_files(
        reading, ("mqtt.password_file", mqtt.password_file), ("mqtt.ca_file", mqtt.ca_file)
    )
    if mqtt.password_file is not None and not mqtt.username:
        path = "mqtt.password_file"
        reading.add(path, reading.lines.get(path), "needs mqtt.username")
    if mqtt.ca_file is not None and not mqtt.tls:
        path = "mqtt.ca_file"
        reading.add(path, reading.lines.get(path), "has no effect unless mqtt.tls is true")
    for path, value in (
        ("mqtt.topic_prefix", mqtt.topic_prefix),
        ("mqtt.homeassistant.prefix", mqtt.homeassistant.prefix),
    ):
        if not valid_prefix(value):
            reading.add(
                path,
                reading.lines.get(path),
                f"must be a plain topic without wildcards or leading/trailing '/', got {value!r}",
            )


def _secret_files(reading: Reading, *entries: tuple[str, Path | None]) -> None:
    for path, file in entries:
        if file is None or not reading.accepted(path):
            continue
        if not file.is_file():
            reading.add(path, reading.lines.get(path), f"no such file: {file}")
        elif not os.access(file, os.R_OK):
            reading.add(path, reading.lines.get(path), f"not readable by this user: {file}")


def _some_sink_keeps_video(settings: Settings, reading: Reading) -> None:
    """MQTT carries only events: without local or S3, every segment would be lost."""
    if settings.sinks.local.enabled or settings.sinks.s3.enabled:
        return
    path = reading.blame("sinks.local.enabled", "sinks.s3.enabled")
    reading.add(
        path,
        reading.lines.get(path),
        "no sink keeps the video: enable sinks.local or sinks.s3 (MQTT carries events only)",
    )
