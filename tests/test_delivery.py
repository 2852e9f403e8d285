"""Issue-4 scenarios end to end: the real daemon, a real Mosquitto, a real S3 server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import paho.mqtt.client as paho
import pytest
from daemon_harness import DaemonRig, wait_for
from moto.server import ThreadedMotoServer
from paho.mqtt.enums import CallbackAPIVersion

from doorbell.sealing import Kind

pytest_plugins = ["mqtt_fixture"]
pytest.register_assert_rewrite("mqtt_fixture")
from mqtt_fixture import Listener, Mosquitto  # noqa: E402
from s3_fixture import S3_ENV, daemon_s3_config  # noqa: E402


def _phone(rig: DaemonRig, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "doorbell.phone", "--home", str(rig.home.directory), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,  # type: ignore[call-overload]
    )


def _mqtt(broker: Mosquitto) -> dict[str, object]:
    return {"mqtt": {"enabled": True, "host": broker.host, "port": broker.port}}


def _events_seen(rig: DaemonRig, count: int) -> None:
    wait_for(lambda: rig.status().get("events", 0) >= count, 30, f"{count} event(s)")


def test_ring_reaches_watch_decrypted_and_the_broker_sees_no_cleartext(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    rig = DaemonRig(tmp_path, extra=_mqtt(mosquitto))
    spy = Listener(mosquitto, "#")
    snapshots = tmp_path / "snapshots"
    try:
        rig.start()
        rig.wait_ready()
        watch = _phone(
            rig,
            "watch",
            "--host",
            mosquitto.host,
            "--port",
            str(mosquitto.port),
            "--json",
            "--count",
            "1",
            "--timeout",
            "60",
            "--out",
            str(snapshots),
        )
        wait_for(lambda: rig.status().get("mqtt", {}).get("connected"), 30, "the broker link")
        # watch says on stderr when it is subscribed; a ring before that would be missed.
        assert watch.stderr is not None
        first = watch.stderr.readline()
        assert "watching" in first, first
        rig.command("ring")
        out, err = watch.communicate(timeout=90)
        assert watch.returncode == 0, err
        assert out.strip(), f"watch printed nothing; stderr: {err}"
        lines = [json.loads(line) for line in out.splitlines()]
        [event] = [line for line in lines if line["type"] != "keyring"]
        assert event["type"] == "ring" and len(event["clip"]) == 32
        with av.open(event["snapshot"]) as container:
            assert next(container.decode(video=0)).width == 160
        assert rig.stop() == 0
    finally:
        rig.kill()
        spy.close()
    events = [m for m in spy.messages if m.topic.endswith("/event")]
    assert events, "the spy saw no event"
    for message in spy.messages:
        payload = bytes(message.payload)
        # Needles long enough that random ciphertext never holds them by chance.
        snapshot_head = Path(event["snapshot"]).read_bytes()[:32]
        for secret in (b'"type":"ring"', event["clip"].encode(), snapshot_head, b'"first_index":'):
            if message.topic.endswith(("/event", "/keyring")):
                assert secret not in payload, (message.topic, secret)
        if not message.topic.endswith(("/event", "/keyring")):
            # With discovery off, the rest is availability and the removal of old entities.
            assert payload in {b"", b"online", b"offline"}, (message.topic, payload[:80])


class PersistentPhone:
    """A phone's MQTT session that outlives broker restarts (clean_session off, fixed id):
    what the broker queues for it while it or the broker was away, it gets later."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._subscribed = threading.Event()
        self._changed = threading.Condition()
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="test-phone-session", clean_session=False
        )
        client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._record
        client.reconnect_delay_set(0.2, 1)
        client.connect(*broker.address)
        client.loop_start()
        self.client = client
        assert self._subscribed.wait(10), "no SUBACK"

    def _record(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        with self._changed:
            self.messages.append((message.topic, bytes(message.payload)))
            self._changed.notify_all()

    def wait(self, count: int, timeout: float) -> list[tuple[str, bytes]]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.messages) >= count, timeout), (
                f"only {len(self.messages)} of {count} messages within {timeout} s"
            )
            return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_broker_down_30_s_while_ringing_three_times(tmp_path: Path, mosquitto: Mosquitto) -> None:
    # The broker keeps sessions across its restart, as a production broker does.
    store = tmp_path / "mosquitto-store"
    store.mkdir()
    mosquitto.config.write_text(
        mosquitto.config.read_text().replace(
            "persistence false", f"persistence true\npersistence_location {store}/"
        )
    )
    mosquitto.stop()
    mosquitto.start()
    rig = DaemonRig(tmp_path, extra=_mqtt(mosquitto))
    phone = PersistentPhone(mosquitto, "doorbell/+/event")
    try:
        rig.start()
        rig.wait_ready()
        wait_for(lambda: rig.status().get("mqtt", {}).get("connected"), 30, "the broker link")
        # The keyring goes out (retained) on the first connect; then nothing more is owed.
        wait_for(lambda: rig.status()["sinks"]["mqtt"]["delivered"] >= 1, 30, "the keyring")
        before = rig.status()["sinks"]["mqtt"]["delivered"]
        mosquitto.stop()
        outage = time.monotonic()
        wait_for(lambda: not rig.status()["mqtt"]["connected"], 30, "the link to notice")
        for count in (1, 2, 3):
            rig.command("ring")
            _events_seen(rig, count)
        # Sealed and spooled, none sent: the uploader holds them for the broker.
        assert rig.status()["sinks"]["mqtt"]["delivered"] == before
        # The outage lasts 30 s by the scenario's definition, not as synchronisation.
        time.sleep(max(0.0, 30 - (time.monotonic() - outage)))
        mosquitto.start()
        messages = phone.wait(3, timeout=120)
        wait_for(lambda: rig.status()["sinks"]["mqtt"]["delivered"] >= before + 3, 30, "the acks")
        assert rig.stop() == 0
    finally:
        rig.kill()
        phone.close()
    reader = rig.home.reader()
    opened = [reader.open(payload) for _, payload in messages]
    assert [o.kind for o in opened] == [Kind.EVENT] * len(opened)
    seqs = [o.seq for o in opened]
    assert seqs == sorted(seqs), "events arrived out of order"
    by_seq: dict[int, bytes] = {}
    for (_, payload), o in zip(messages, opened, strict=True):
        assert by_seq.setdefault(o.seq, payload) == payload, "one seq, two contents"
    assert len(by_seq) == 3
    assert [o.meta["type"] for o in opened[:3]] == ["ring"] * 3


class RestartableS3:
    """moto on a fixed loopback port that can go away and come back (its data stays in
    this process), like an S3 endpoint during a network outage."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.server: ThreadedMotoServer | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None


@pytest.fixture
def s3_outage() -> Iterator[RestartableS3]:
    server = RestartableS3()
    server.start()
    yield server
    server.stop()


def _sync(rig: DaemonRig, url: str, endpoint: str, out: Path) -> subprocess.CompletedProcess[str]:
    """``doorbell-phone sync`` from the bucket, as the phone runs it."""
    return subprocess.run(
        [
            sys.executable, "-m", "doorbell.phone", "--home", str(rig.home.directory),
            "sync", url, "--endpoint", endpoint, "--insecure", "--out", str(out),
        ],
        capture_output=True, text=True, timeout=120, env={**os.environ, **S3_ENV},
    )  # fmt: skip


def test_s3_down_while_recording_the_spool_holds_the_clip_then_sync_exports_it(
    tmp_path: Path, s3_outage: RestartableS3
) -> None:
    from minio import Minio

    client = Minio(s3_outage.endpoint, "testing", "testing", secure=False, region="us-east-1")
    client.make_bucket("clips")
    rig = DaemonRig(tmp_path, extra=daemon_s3_config(s3_outage.endpoint, "clips"))
    try:
        rig.start(env=S3_ENV)
        rig.wait_ready()
        rig.wait_preroll()
        s3_outage.stop()
        rig.command("ring")
        wait_for(
            lambda: (s := rig.status()).get("clips") == 1 and s.get("clip") is None,
            60,
            "the clip to end",
        )
        held = rig.status()["spool"]["objects"]
        assert held >= 4, "the spool should hold the clip while S3 is down"
        assert rig.status()["sinks"]["s3"]["failures"] >= 1
        s3_outage.start()
        wait_for(lambda: rig.status()["spool"]["objects"] == 0, 90, "the spool to drain")
        assert rig.stop() == 0
    finally:
        rig.kill()
    out = tmp_path / "synced"
    sync = _sync(rig, "s3://clips/doorbells/", s3_outage.endpoint, out)
    assert sync.returncode == 0, sync.stdout + sync.stderr
    clips = list((out / "clips").glob("*-ring-*.mp4"))
    assert len(clips) == 1, sync.stdout + sync.stderr
    [clip] = clips
    with av.open(str(clip)) as container:
        assert sum(1 for _ in container.decode(video=0)) > 0
    keys = [o.object_name for o in client.list_objects("clips", prefix="doorbells/")]
    assert keys and all(k.endswith(".sealed") for k in keys)


def test_sigkill_during_upload_leaves_only_complete_verifiable_objects(
    tmp_path: Path, s3_outage: RestartableS3
) -> None:
    from minio import Minio

    client = Minio(s3_outage.endpoint, "testing", "testing", secure=False, region="us-east-1")
    client.make_bucket("crash")
    rig = DaemonRig(tmp_path, extra=daemon_s3_config(s3_outage.endpoint, "crash"), continuous=True)
    try:
        rig.start(env=S3_ENV)
        rig.wait_ready()
        rig.command("ring")
        wait_for(lambda: rig.status()["sinks"]["s3"]["delivered"] >= 3, 60, "uploads")
        rig.stop(signal.SIGKILL)
        rig.start(env=S3_ENV)
        rig.wait_ready()
        wait_for(lambda: rig.status()["spool"]["objects"] == 0, 90, "the spool to drain")
        assert rig.stop() == 0
    finally:
        rig.kill()
    out = tmp_path / "synced"
    sync = _sync(rig, "s3://crash/doorbells/", s3_outage.endpoint, out)
    # Every object verifies and the chain has no unexplained gap: nothing lost, nothing torn.
    assert sync.returncode == 0, sync.stdout + sync.stderr
    assert "missing" not in sync.stdout


def test_quota_exhaustion_evicts_continuous_first_announces_it_and_keeps_capturing(
    tmp_path: Path, s3_outage: RestartableS3
) -> None:
    from minio import Minio
    from s3_fixture import closed_port

    # Continuous recording into a 2 MiB spool while the bucket is unreachable.
    unreachable = daemon_s3_config(f"127.0.0.1:{closed_port()}", "quota")
    camera = {"camera": {"bitrate": 2_000_000}, "spool": {"quota_mb": 2}}
    rig = DaemonRig(tmp_path, extra={**unreachable, **camera}, continuous=True)
    try:
        rig.start(env=S3_ENV)
        rig.wait_ready()
        wait_for(lambda: rig.status()["segments"] >= 2, 30, "two segments")
        rig.command("ring")
        wait_for(lambda: rig.status()["clip"] is None, 30, "the ring clip to end")
        wait_for(lambda: "evicted continuous" in rig.log_text(), 60, "an eviction")
        frames = rig.status()["frames"]
        wait_for(lambda: rig.status()["frames"] > frames + 15, 30, "capture to go on")
        spool = rig.status()["spool"]
        assert spool["bytes"] <= spool["quota_bytes"] + 512 * 1024
        assert rig.stop() == 0
        log = rig.log_text()
        assert "evicted continuous" in log
        assert "evicted clip" not in log, "a clip went before the continuous recording"

        # The bucket comes back (a new endpoint in the config): the spool drains.
        client = Minio(s3_outage.endpoint, "testing", "testing", secure=False, region="us-east-1")
        client.make_bucket("quota")
        config = json.loads(rig.config.read_text())
        config["sinks"]["s3"]["endpoint"] = s3_outage.endpoint
        rig.config.write_text(json.dumps(config))
        rig.start(env=S3_ENV)
        rig.wait_ready()
        wait_for(lambda: rig.status()["spool"]["sinks"]["s3"]["pending"] == 0, 90, "the drain")
        assert rig.stop() == 0
    finally:
        rig.kill()
    out = tmp_path / "synced"
    sync = _sync(rig, "s3://quota/doorbells/", s3_outage.endpoint, out)
    # Evicted objects are gaps the doorbell announced; nothing else is missing, and the
    # ring's clip, spared by the eviction order, is whole.
    assert "announced as quota" in sync.stdout, sync.stdout
    assert "unexplained" not in sync.stdout or "0 unexplained" in sync.stdout, sync.stdout
    ring_clips = list((out / "clips").glob("*-ring-*.mp4"))
    assert len(ring_clips) == 1, sync.stdout
    assert f"{ring_clips[0].stem}: segment" not in sync.stdout, sync.stdout


def test_doctor_checks_the_bucket_and_the_broker(
    tmp_path: Path, s3_outage: RestartableS3, mosquitto: Mosquitto
) -> None:
    from minio import Minio

    Minio(s3_outage.endpoint, "testing", "testing", secure=False).make_bucket("doctor")
    rig = DaemonRig(
        tmp_path, extra={**daemon_s3_config(s3_outage.endpoint, "doctor"), **_mqtt(mosquitto)}
    )

    def doctor() -> dict[str, str]:
        run = subprocess.run(
            [sys.executable, "-m", "doorbell", "doctor", "-c", str(rig.config)],
            capture_output=True, text=True, timeout=60, env={**os.environ, **S3_ENV},
        )  # fmt: skip
        return {line.split()[1]: line for line in run.stdout.splitlines() if line.strip()}

    found = doctor()
    assert found["s3"].startswith("PASS") and "doctor" in found["s3"]
    assert found["mqtt"].startswith("WARN") and "no TLS" in found["mqtt"]
    s3_outage.stop()
    mosquitto.stop()
    found = doctor()
    assert found["s3"].startswith("FAIL")
    assert found["mqtt"].startswith("FAIL")
