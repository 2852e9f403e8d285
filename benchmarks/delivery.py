"""Measure how soon sealed objects reach the phone and the bucket (part of scripts/bench).

Everything runs on loopback in the same run: a Mosquitto broker (the tests' own,
tests/mqtt_fixture.py), moto's S3 server in a child process, the real daemon
(``python -m doorbell run``) on 720p30 synthetic video with one enrolled
mlkem768-x25519 phone, and the phone itself in this process.

- ``ring_to_phone_ms``: from just before ``ring`` is sent on the daemon's control
  socket to the moment the phone's ``Watcher`` has verified, decrypted and printed
  the event with a new seq. The phone is a paho subscriber feeding ``Watcher.handle``,
  as ``doorbell-phone watch --json`` does. Presses are 0.3 to 0.5 s apart, each after
  the previous event arrived; p50 and p99 are nearest-rank percentiles, so with 50
  presses p99 is the slowest press.
- ``ring_to_bucket_s``: from just before ``ring`` to the first bucket listing that
  holds both the event of that ring and the clip's first media segment (the oldest
  pre-roll segment), polled every 20 ms. Before each ring the pre-roll is full, the
  recorder idle and the S3 queue empty, so the figure is one ring on an idle uplink.
- ``drain_vs_raw_put``: a backlog of 2 MiB sealed objects spooled for the S3 sink,
  drained by the product's ``Uploader`` and ``S3Sink``, against a plain minio client
  putting the same bytes (read from the same files) under the same names into a fresh
  bucket, one after another. The ratio is raw time / drain time, best of each over
  alternating runs: 1.0 means the spool adds nothing to the network's own cost.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

import paho.mqtt.client as paho
from minio import Minio
from minio.deleteobjects import DeleteObject
from mqtt_fixture import MOSQUITTO, Mosquitto
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.daemon import FPS, HEIGHT, WIDTH
from doorbell.common.topics import EVENT_LEAF, KEYRING_LEAF, all_devices
from doorbell.config.settings import RecordingSettings, S3SinkSettings
from doorbell.daemon.control import SOCKET_NAME, ControlError, send_command
from doorbell.phone.watch import Watcher
from doorbell.sealing import (
    DevicePublicKey,
    KeyringStore,
    Kind,
    Reader,
    RecipientPrivateKey,
    Sealer,
    Suite,
    load_device_key,
    prepare_state_dir,
)
from doorbell.transport.s3 import ACCESS_KEY_ENV, SECRET_KEY_ENV, S3Sink
from doorbell.transport.spool import ObjectClass, Spool, SpooledObject
from doorbell.transport.uploader import Uploader

MIB = 1024 * 1024
OBJECT_SIZE = 2 * MIB
# The daemon runs with the default recording settings, so the target follows them.
RECORDING = RecordingSettings()
SEGMENT_SECONDS = RECORDING.segment_seconds
PRE_ROLL_SECONDS = RECORDING.pre_roll_seconds
TARGETS = {
    "ring_to_phone_ms_p99": 150.0,
    "ring_to_bucket_s": SEGMENT_SECONDS + 1.0,
    "drain_vs_raw_put": 0.9,
}
FLOORS = frozenset({"drain_vs_raw_put"})  # targets to reach; the others not to exceed
PRESS_SPACING_S = (0.3, 0.5)
BUCKET_POLL_S = 0.02
# Only so each bucket ring opens a clip of its own sooner: the post-roll does not
# change how soon the start of a clip is delivered.
BUCKET_POST_ROLL_S = 2.0
TOPIC_PREFIX = "doorbell"
REGION = "us-east-1"
# moto takes any credentials; the daemon reads them from its environment.
CREDENTIALS = {ACCESS_KEY_ENV: "bench", SECRET_KEY_ENV: "bench"}
START_TIMEOUT = 60.0
EVENT_TIMEOUT = 10.0
DRAIN_TIMEOUT = 900.0
BUCKET_DEFINITION = (
    "ring sent -> first listing that holds the ring's event and the clip's first media "
    "segment (oldest pre-roll segment); pre-roll full, S3 queue empty before each ring"
)

_MOTO_CHILD = """
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


@dataclass(frozen=True)
class DeliveryPlan:
    """How much to measure: presses to the phone, rings to the bucket, the backlog."""

    presses: int
    bucket_rings: int
    backlog_bytes: int
    drain_runs: int = 2  # of each, alternating; the best of each counts


def nearest_rank(values: Iterable[float], percent: float) -> float:
    """The smallest value with at least ``percent`` % of the values at or below it."""
    ordered = sorted(values)
    return ordered[max(1, math.ceil(percent / 100 * len(ordered))) - 1]


# --- the results -----------------------------------------------------------------


@dataclass(frozen=True)
class Press:
    """One ring, as seconds after it was sent."""

    handled_s: float  # the daemon's reply: the event sealed and durable in the spool
    at_phone_s: float  # the MQTT message reached the phone's client
    opened_s: float  # the Watcher verified, decrypted and printed the event


@dataclass(frozen=True)
class PhoneLatency:
    presses: tuple[Press, ...]

    def ms(self, stage: str) -> list[float]:
        return [getattr(press, stage) * 1000 for press in self.presses]

    def details(self) -> dict[str, Any]:
        total = self.ms("opened_s")
        return {
            "presses": len(total),
            "p50_ms": nearest_rank(total, 50),
            "p99_ms": nearest_rank(total, 99),
            "mean_ms": statistics.fmean(total),
            "max_ms": max(total),
            "percentiles": "nearest rank (with 100 or fewer presses, p99 is the slowest)",
            "spacing_s": list(PRESS_SPACING_S),
            "stages_ms": {
                stage: {"p50": nearest_rank(values, 50), "p99": nearest_rank(values, 99)}
                for stage, values in (
                    ("ring_handled", self.ms("handled_s")),
                    ("at_phone", self.ms("at_phone_s")),
                    ("opened", total),
                )
            },
        }


@dataclass(frozen=True)
class BucketLatency:
    samples_s: tuple[float, ...]

    def details(self) -> dict[str, Any]:
        return {
            "rings": len(self.samples_s),
            "median_s": statistics.median(self.samples_s),
            "max_s": max(self.samples_s),
            "samples_s": list(self.samples_s),
            "segment_seconds": SEGMENT_SECONDS,
            "pre_roll_seconds": PRE_ROLL_SECONDS,
            "poll_interval_s": BUCKET_POLL_S,
            "definition": BUCKET_DEFINITION,
        }


@dataclass(frozen=True)
class DrainSpeed:
    objects: int
    total_bytes: int
    drain_s: tuple[float, ...]
    raw_put_s: tuple[float, ...]

    @property
    def ratio(self) -> float:
        return min(self.raw_put_s) / min(self.drain_s)

    def details(self) -> dict[str, Any]:
        mib = self.total_bytes / MIB
        return {
            "objects": self.objects,
            "mib": mib,
            "object_mib": OBJECT_SIZE / MIB,
            "runs": len(self.drain_s),
            "drain_s": min(self.drain_s),
            "raw_put_s": min(self.raw_put_s),
            "drain_mib_s": mib / min(self.drain_s),
            "raw_put_mib_s": mib / min(self.raw_put_s),
            "drain_runs_s": list(self.drain_s),
            "raw_put_runs_s": list(self.raw_put_s),
        }


@dataclass(frozen=True)
class Delivery:
    """The three measurements; one is None when a tool it needs is missing."""

    phone: PhoneLatency | None
    bucket: BucketLatency | None
    drain: DrainSpeed | None
    missing: tuple[str, ...]  # what was not measured, and why

    def headline(self) -> dict[str, float | None]:
        phone = None if self.phone is None else self.phone.details()
        return {
            "ring_to_phone_ms_p50": None if phone is None else phone["p50_ms"],
            "ring_to_phone_ms_p99": None if phone is None else phone["p99_ms"],
            "ring_to_bucket_s": None
            if self.bucket is None
            else statistics.median(self.bucket.samples_s),
            "drain_vs_raw_put": None if self.drain is None else self.drain.ratio,
        }

    def meets_targets(self) -> dict[str, bool | None]:
        return {
            key: None
            if value is None
            else (value >= TARGETS[key] if key in FLOORS else value <= TARGETS[key])
            for key, value in self.headline().items()
            if key in TARGETS
        }

    def details(self) -> dict[str, Any]:
        return {
            "phone": None if self.phone is None else self.phone.details(),
            "bucket": None if self.bucket is None else self.bucket.details(),
            "drain": None if self.drain is None else self.drain.details(),
            "missing": list(self.missing),
        }


# --- the servers and the daemon, each a child process -------------------------------


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """Ask a child to end, and make sure it did."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class MotoServer:
    """moto's S3 server in a child process: its work does not share this process's GIL.

    It keeps objects in memory, so every bucket made here is removed after use.
    """

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def __enter__(self) -> Self:
        self._process = subprocess.Popen(
            [sys.executable, "-c", _MOTO_CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert self._process.stdout is not None
        port = self._process.stdout.readline().strip()
        if not port.isdigit():
            self.__exit__()
            raise RuntimeError("moto's S3 server did not start (is moto[server] installed?)")
        self.endpoint = f"127.0.0.1:{int(port)}"
        return self

    def __exit__(self, *exc: object) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        process.stdin.close()  # the child stops its server at end of input
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def client(self) -> Minio:
        return Minio(
            self.endpoint,
            access_key=CREDENTIALS[ACCESS_KEY_ENV],
            secret_key=CREDENTIALS[SECRET_KEY_ENV],
            secure=False,
            region=REGION,
        )

    def sink_settings(self, bucket: str) -> S3SinkSettings:
        return S3SinkSettings(
            enabled=True, endpoint=self.endpoint, region=REGION, bucket=bucket, secure=False
        )


def object_names(client: Minio, bucket: str) -> list[str]:
    return [o.object_name for o in client.list_objects(bucket, recursive=True) if o.object_name]


def remove_bucket(client: Minio, bucket: str) -> None:
    doomed = (DeleteObject(name) for name in object_names(client, bucket))
    for error in client.remove_objects(bucket, doomed):
        raise RuntimeError(f"cannot empty the bucket {bucket}: {error}")
    client.remove_bucket(bucket)


def enrol_phone(state: Path) -> RecipientPrivateKey:
    """A new mlkem768-x25519 phone in the keyring of ``state``; returns its secret key."""
    phone = RecipientPrivateKey.generate(Suite.MLKEM768_X25519)
    with KeyringStore(state).editing() as box:
        box[0] = box[0].add("bench-phone", phone.public_key(), datetime.now(UTC))
    return phone


class BenchDaemon:
    """The real daemon in a child process on 720p30 synthetic video, one phone enrolled.

    The phone's secret key stays here, so this process can open what the daemon seals.
    """

    def __init__(
        self,
        root: Path,
        *,
        sinks: dict[str, Any],
        mqtt: dict[str, Any] | None = None,
        recording: dict[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        state = prepare_state_dir(root / "state")
        self.phone = enrol_phone(state)
        self.device: DevicePublicKey = load_device_key(state)[0].public_key
        self.socket = root / "run" / SOCKET_NAME
        self.log = root / "daemon.log"
        config = {
            "state_dir": str(state),
            "runtime_dir": str(root / "run"),
            "camera": {"source": "synthetic", "width": WIDTH, "height": HEIGHT, "fps": FPS},
            # Every ring is one event: none may fall into a cooldown.
            "recording": {"cooldown_seconds": 0.0, **(recording or {})},
            "gpio": {"pin_factory": "mock"},
            "sinks": sinks,
            "mqtt": mqtt or {"enabled": False},
            "logging": {"level": "warning"},
        }
        self.config = root / "daemon.yaml"
        self.config.write_text(json.dumps(config))
        self._env = {**os.environ, **(env or {})}
        self._process: subprocess.Popen[bytes] | None = None

    def reader(self) -> Reader:
        return Reader([self.phone], [self.device])

    def __enter__(self) -> Self:
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "doorbell", "run", "-c", str(self.config)],
                stdout=log,
                stderr=log,
                env=self._env,
            )
        try:
            self.wait_until(lambda status: bool(status.get("ready")), "its first frame")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        process, self._process = self._process, None
        if process is not None:
            stop_process(process)

    def status(self) -> dict[str, Any]:
        process = self._process
        assert process is not None, "the daemon is not running"
        if process.poll() is not None:
            log = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the daemon exited with {process.returncode}:\n{log}")
        try:
            return dict(send_command(self.socket, "status")["status"])
        except ControlError:
            return {}  # not listening yet

    def ring(self) -> dict[str, Any]:
        return send_command(self.socket, "ring")

    def wait_until(
        self,
        condition: Callable[[dict[str, Any]], bool],
        what: str,
        timeout: float = START_TIMEOUT,
    ) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self.status()):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the daemon did not reach {what} within {timeout:.0f} s")
            time.sleep(0.05)


def pre_roll_full(status: dict[str, Any]) -> bool:
    return bool(status.get("preroll_seconds", 0) >= PRE_ROLL_SECONDS)


def sink_idle(status: dict[str, Any], sink: str) -> bool:
    """The recorder has no clip open and ``sink`` has taken everything spooled for it."""
    queues = (status.get("spool") or {}).get("sinks", {})
    return status.get("recorder") == "idle" and queues.get(sink, {}).get("pending") == 0


# --- ring -> phone, over MQTT --------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    seq: int
    at_phone: float  # perf_counter when the message reached the client
    opened: float  # perf_counter when the Watcher had printed the event


class Phone:
    """A phone in this process: a paho subscriber feeding the product's ``Watcher``."""

    def __init__(self, broker: Mosquitto, reader: Reader, device: DevicePublicKey) -> None:
        self._out, self._err = io.StringIO(), io.StringIO()
        self._watcher = Watcher(
            reader,
            {device.device_id: "bench"},
            prefix=TOPIC_PREFIX,
            as_json=True,
            stdout=self._out,
            stderr=self._err,
        )
        self._arrivals: list[Arrival] = []
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        topics = [(all_devices(TOPIC_PREFIX, leaf), 1) for leaf in (EVENT_LEAF, KEYRING_LEAF)]
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{os.urandom(4).hex()}")
        client.on_connect = lambda client, *_: client.subscribe(topics)
        client.on_subscribe = lambda *_: self._subscribed.set()
        client.on_message = self._message
        client.connect(broker.host, broker.port)
        client.loop_start()
        self._client = client
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError("the phone's subscription was not acknowledged")

    def _message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        at_phone = time.perf_counter()
        events = self._watcher.events
        self._watcher.handle(message.topic, message.payload)
        opened = time.perf_counter()
        if self._watcher.events == events:
            return  # a keyring, a duplicate, or something the Watcher refused
        line = json.loads(self._out.getvalue().splitlines()[-1])
        with self._changed:
            self._arrivals.append(Arrival(int(line["seq"]), at_phone, opened))
            self._changed.notify_all()

    def next_event(self, after_seq: int, timeout: float = EVENT_TIMEOUT) -> Arrival:
        """The first event opened with a seq above ``after_seq``."""
        with self._changed:
            found = self._changed.wait_for(
                lambda: any(a.seq > after_seq for a in self._arrivals), timeout
            )
            if not found:
                raise RuntimeError(
                    f"no event after seq {after_seq} reached the phone within {timeout:.0f} s; "
                    f"the watcher said: {self._err.getvalue()[-1000:]!r}"
                )
            return next(a for a in self._arrivals if a.seq > after_seq)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@contextlib.contextmanager
def running_broker(directory: Path) -> Iterator[Mosquitto]:
    """The tests' Mosquitto broker, for anonymous clients on a free loopback port."""
    directory.mkdir(parents=True)
    broker = Mosquitto(directory)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def ring_to_phone(presses: int, workdir: Path, rng: random.Random) -> PhoneLatency:
    """``presses`` rings, each timed until the phone has opened its event."""
    with running_broker(workdir / "mosquitto") as broker:
        daemon = BenchDaemon(
            workdir / "mqtt-daemon",
            sinks={"local": {"directory": str(workdir / "mqtt-daemon" / "bucket")}},
            mqtt={"enabled": True, "host": broker.host, "port": broker.port},
        )
        with daemon:
            daemon.wait_until(
                lambda s: pre_roll_full(s) and sink_idle(s, "mqtt"),
                "a full pre-roll and its keyring on the broker",
            )
            phone = Phone(broker, daemon.reader(), daemon.device)
            try:
                timings = []
                last_seq = -1
                for _ in range(presses):
                    start = time.perf_counter()
                    daemon.ring()
                    handled = time.perf_counter()
                    arrival = phone.next_event(last_seq)
                    last_seq = arrival.seq
                    timings.append(
                        Press(handled - start, arrival.at_phone - start, arrival.opened - start)
                    )
                    pause = start + rng.uniform(*PRESS_SPACING_S) - time.perf_counter()
                    time.sleep(max(0.0, pause))
            finally:
                phone.close()
    return PhoneLatency(tuple(timings))


# --- ring -> bucket, over S3 ----------------------------------------------------------


def clip_start_listed(
    client: Minio, bucket: str, reader: Reader, known: set[str], clip: str
) -> float:
    """perf_counter of the first listing that held both the clip's event and the clip's
    first media segment. Objects not in ``known`` are opened to tell which is which."""
    listed: dict[str, float] = {}
    segments: dict[tuple[str, int], str] = {}
    event: str | None = None
    first: tuple[str, int] | None = None
    deadline = time.monotonic() + 60
    while True:
        names = object_names(client, bucket)
        now = time.perf_counter()
        for name in names:
            if name in known or name in listed:
                continue
            listed[name] = now
            response = client.get_object(bucket, name)
            try:
                opened = reader.open(response.read())
            finally:
                response.close()
                response.release_conn()
            meta = opened.meta
            if opened.kind is Kind.EVENT and meta.get("clip") == clip:
                event, first = name, (meta["stream"], meta["first_index"])
            elif opened.kind is Kind.SEGMENT:
                segments[(meta["stream"], meta["index"])] = name
        if event is not None and first in segments:
            return max(listed[event], listed[segments[first]])
        if time.monotonic() > deadline:
            raise RuntimeError(f"the start of clip {clip[:8]} did not reach the bucket in 60 s")
        time.sleep(BUCKET_POLL_S)


def ring_to_bucket(rings: int, moto: MotoServer, workdir: Path) -> BucketLatency:
    """``rings`` clips, each timed until its event and first segment are in the bucket."""
    client, bucket = moto.client(), "ring-to-bucket"
    client.make_bucket(bucket)
    daemon = BenchDaemon(
        workdir / "s3-daemon",
        sinks={"local": {"enabled": False}, "s3": _as_config(moto.sink_settings(bucket))},
        recording={"post_roll_seconds": BUCKET_POST_ROLL_S},
        env=CREDENTIALS,
    )
    reader = daemon.reader()
    samples = []
    try:
        with daemon:
            for _ in range(rings):
                daemon.wait_until(
                    lambda s: pre_roll_full(s) and sink_idle(s, "s3"),
                    "a full pre-roll, no open clip and an empty S3 queue",
                )
                known = set(object_names(client, bucket))
                start = time.perf_counter()
                clip = str(daemon.ring()["clip"])
                samples.append(clip_start_listed(client, bucket, reader, known, clip) - start)
    finally:
        remove_bucket(client, bucket)
    return BucketLatency(tuple(samples))


def _as_config(settings: S3SinkSettings) -> dict[str, Any]:
    return {
        "enabled": settings.enabled,
        "endpoint": settings.endpoint,
        "region": settings.region,
        "bucket": settings.bucket,
        "secure": settings.secure,
    }


# --- a backlog drained from the spool, against plain puts -------------------------------


def spool_backlog(directory: Path, backlog_bytes: int) -> list[SpooledObject]:
    """Seal ``backlog_bytes`` of 2 MiB segments into a spool for the S3 sink; close it."""
    state = prepare_state_dir(directory / "state")
    enrol_phone(state)
    body = os.urandom(OBJECT_SIZE)  # sealed anew each time: every object differs
    stream = os.urandom(16).hex()
    with Sealer(state) as sealer, Spool(directory / "spool", 2 * backlog_bytes, ["s3"]) as spool:
        for index in range(max(1, backlog_bytes // OBJECT_SIZE)):
            meta = {"stream": stream, "index": index, "start": index * SEGMENT_SECONDS}
            for sealed in sealer.seal(Kind.SEGMENT, meta, body):
                cls = ObjectClass.CLIP if sealed.kind is Kind.SEGMENT else ObjectClass.ESSENTIAL
                spool.put(sealed, cls, ["s3"])
        return spool.pending("s3")


def clone_spool(source: Path, target: Path) -> None:
    """Hard links to a closed spool's files: the same backlog again, without writing it."""
    for directory in (source / "objects", *(source / "queues").iterdir()):
        into = target / directory.relative_to(source)
        into.mkdir(mode=0o700, parents=True)
        for path in directory.iterdir():
            os.link(path, into / path.name)


def drain(spool_dir: Path, moto: MotoServer, bucket: str) -> float:
    """Seconds for the product's uploader to empty the spool into a fresh bucket."""
    moto.client().make_bucket(bucket)
    sink = S3Sink(moto.sink_settings(bucket), environ=CREDENTIALS)
    try:
        with Spool(spool_dir, 1 << 40, [sink.name]) as spool:
            uploader = Uploader(spool, sink)
            start = time.perf_counter()
            uploader.start()
            drained = spool.wait_drained(sink.name, timeout=DRAIN_TIMEOUT)
            elapsed = time.perf_counter() - start
            uploader.stop(timeout=10)
    finally:
        sink.close()
    error = uploader.status().last_error
    if not drained or error is not None:
        # A retry waits a backoff: the time would not be the uploader's speed.
        raise RuntimeError(f"the spool did not drain cleanly into moto: {error}")
    return elapsed


def put_raw(objects: list[SpooledObject], moto: MotoServer, bucket: str) -> float:
    """Seconds for a plain minio client to put the same objects, one after another."""
    client = moto.client()
    client.make_bucket(bucket)
    start = time.perf_counter()
    for obj in objects:
        data = obj.read()
        client.put_object(bucket, obj.name, io.BytesIO(data), len(data))
    return time.perf_counter() - start


def drain_versus_put(backlog_bytes: int, runs: int, moto: MotoServer, workdir: Path) -> DrainSpeed:
    objects = spool_backlog(workdir / "backlog", backlog_bytes)
    client = moto.client()
    expected = sorted(obj.name for obj in objects)
    drains, puts = [], []

    def timed(upload: Callable[[str], float], bucket: str) -> float:
        """``upload`` into a fresh bucket, checked whole, then removed: moto keeps it in RAM."""
        try:
            seconds = upload(bucket)
            if object_names(client, bucket) != expected:
                raise RuntimeError(f"the bucket {bucket} does not hold the whole backlog")
            return seconds
        finally:
            remove_bucket(client, bucket)

    for run in range(runs):
        clone = workdir / f"backlog-{run}"
        clone_spool(workdir / "backlog" / "spool", clone)
        drains.append(timed(functools.partial(drain, clone, moto), f"drain-{run}"))
        puts.append(timed(functools.partial(put_raw, objects, moto), f"raw-put-{run}"))
    return DrainSpeed(len(objects), sum(o.size for o in objects), tuple(drains), tuple(puts))


# --- all of it ---------------------------------------------------------------------------


def measure_delivery(
    plan: DeliveryPlan, workdir: Path, *, rng: random.Random | None = None
) -> Delivery:
    """The three measurements; those whose tools are missing are left out, and said so."""
    rng = rng or random.Random()
    missing = []
    phone = bucket = drained = None
    if MOSQUITTO.exists():
        phone = ring_to_phone(plan.presses, workdir, rng)
    else:
        missing.append(f"ring_to_phone: {MOSQUITTO} is absent (apt-get install mosquitto)")
    if importlib.util.find_spec("moto") is not None:
        with MotoServer() as moto:
            bucket = ring_to_bucket(plan.bucket_rings, moto, workdir)
            drained = drain_versus_put(plan.backlog_bytes, plan.drain_runs, moto, workdir)
    else:
        missing.append(
            "ring_to_bucket, drain_vs_raw_put: moto is absent (pip install moto[server])"
        )
    return Delivery(phone, bucket, drained, tuple(missing))
