"""What ``doorbell doctor`` says about the bucket's key and about the running daemon's spool
and sinks.

The bucket checks run against a real S3 server (moto), with moto's IAM simulation switched
on for the keys that must be refused, and use the policies exactly as README.md prints
them. The daemon checks read a real control socket serving what the daemon's status
serves for delivery: a real spool's ``stats()`` and real uploaders' ``status()``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from daemon_harness import DaemonRig, wait_for
from s3_fixture import (  # noqa: F401
    S3Server,
    closed_port,
    iam_enforced,
    iam_user,
    moto_server,
    s3_server,
    unreachable_s3_sink,
)
from test_s3 import settings
from test_spool import TIMEOUT, SignallingEvent, seal, sealer  # noqa: F401
from test_spool_full_disk import small_disk  # noqa: F401

from doorbell.cli import main
from doorbell.daemon.control import SOCKET_NAME, ControlServer
from doorbell.daemon.doctor import FAIL, PASS, WARN, Check, memory_cgroup_enabled, run_checks
from doorbell.phone.s3source import S3Source
from doorbell.sealing import Kind, RecipientPrivateKey, Suite
from doorbell.transport.s3 import S3Sink
from doorbell.transport.sink import SinkUnavailable
from doorbell.transport.spool import ObjectClass, Spool
from doorbell.transport.uploader import Uploader

README = Path(__file__).resolve().parents[1] / "README.md"
PREFIX = "front/"


def readme_policies() -> dict[str, dict[str, Any]]:
    """The policies of README's bucket section, by the Sid of their first statement."""
    text = README.read_text()
    section = text[text.index("### A bucket the doorbell cannot empty") :]
    section = section[: section.index("\n## ")]
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", section, re.DOTALL)]
    return {policy["Statement"][0]["Sid"]: policy for policy in blocks}


def for_bucket(policy: dict[str, Any], bucket: str) -> dict[str, Any]:
    """A README policy with the test bucket in place of the example's."""
    text = json.dumps(policy).replace("my-doorbell", bucket)
    return json.loads(text)  # type: ignore[no-any-return]


def write_config(root: Path, s3: dict[str, Any] | None = None) -> Path:
    """A configuration with the state and the control socket under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    config = {
        "state_dir": str(root / "state"),
        "runtime_dir": str(root / "run"),
        "camera": {"source": "synthetic"},
        "sinks": {"s3": s3 or {"enabled": False}},
    }
    path = root / "doorbell.yaml"
    path.write_text(json.dumps(config))
    return path


def s3_config(root: Path, server: S3Server, key: tuple[str, str]) -> Path:
    """A configuration whose S3 sink is the test bucket, with ``key`` in secret files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "access-key").write_text(key[0])
    (root / "secret-key").write_text(key[1])
    s3 = {
        "enabled": True,
        "endpoint": server.endpoint,
        "bucket": server.bucket,
        "prefix": PREFIX,
        "secure": False,
        "access_key_file": str(root / "access-key"),
        "secret_key_file": str(root / "secret-key"),
    }
    return write_config(root, s3)


def doctor(config: Path) -> dict[str, Check]:
    return {check.name: check for check in run_checks(config)}


def sink_for(server: S3Server, key: tuple[str, str], prefix: str = PREFIX) -> S3Sink:
    """The product's S3 sink on the test bucket with ``key``."""
    environ = {"AWS_ACCESS_KEY_ID": key[0], "AWS_SECRET_ACCESS_KEY": key[1]}
    return S3Sink(settings(server, prefix=prefix), environ=environ)


# -- may the bucket key delete? -------------------------------------------------------------


def test_doctor_warns_when_the_bucket_key_can_delete_and_deletes_nothing(
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    key = (s3_server.access_key, s3_server.secret_key)
    sink = sink_for(s3_server, key)
    sink.deliver("0123456789abcdef-00000000000000000000.sealed", b"sealed bytes", Kind.EVENT)
    sink.close()
    before = s3_server.keys()

    found = doctor(s3_config(tmp_path, s3_server, key))
    assert found["s3"].verdict == PASS
    bucket = found["bucket"]
    assert bucket.verdict == WARN
    assert f"can delete objects in {s3_server.bucket}" in bucket.detail
    assert "README.md, 'A bucket the doorbell cannot empty'" in bucket.detail
    assert s3_server.keys() == before  # the probe deleted nothing and left nothing


def test_the_readme_put_only_key_uploads_cannot_delete_and_doctor_passes_it(
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    policies = readme_policies()
    assert set(policies) == {"UploadSealedObjects", "ReadSealedObjects"}
    bucket, tag = s3_server.bucket, uuid.uuid4().hex[:8]
    doorbell = iam_user(
        s3_server.endpoint, f"doorbell-{tag}", for_bucket(policies["UploadSealedObjects"], bucket)
    )
    phone = iam_user(
        s3_server.endpoint, f"phone-{tag}", for_bucket(policies["ReadSealedObjects"], bucket)
    )
    everything = iam_user(
        s3_server.endpoint,
        f"admin-{tag}",
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        },
    )
    name = "0123456789abcdef-00000000000000000007.sealed"
    with iam_enforced(s3_server.endpoint):
        # moto maps HEAD bucket to an "s3:HeadBucket" action AWS does not have (AWS checks
        # s3:ListBucket, which the README grants), so only the bucket line is judged here.
        assert doctor(s3_config(tmp_path / "d", s3_server, doorbell))["bucket"] == Check(
            "bucket", PASS, f"the doorbell's credentials cannot delete in {bucket}"
        )
        assert doctor(s3_config(tmp_path / "a", s3_server, everything))["bucket"].verdict == WARN

        uploader = sink_for(s3_server, doorbell)
        uploader.deliver(name, b"sealed bytes", Kind.SEGMENT)  # the policy is enough to work
        assert uploader.can_delete() is False
        uploader.close()
        elsewhere = sink_for(s3_server, doorbell, prefix="back/")
        with pytest.raises(SinkUnavailable, match="AccessDenied"):
            elsewhere.deliver(name, b"sealed bytes", Kind.SEGMENT)  # only its own prefix
        elsewhere.close()

        reader = sink_for(s3_server, phone)
        assert reader.can_delete() is False
        with pytest.raises(SinkUnavailable, match="AccessDenied"):
            reader.deliver(name, b"overwritten", Kind.SEGMENT)  # the phone's key writes nothing
        reader.close()
        source = S3Source(
            f"s3://{bucket}/{PREFIX}",
            endpoint=s3_server.endpoint,
            access_key=phone[0],
            secret_key=phone[1],
            secure=False,
        )
        assert source.names() == [name]
        assert source.read(name) == b"sealed bytes"
    assert s3_server.keys() == [PREFIX + name]


# -- the running daemon's spool and sinks -----------------------------------------------------


@dataclasses.dataclass
class Delivery:
    """A spool with its uploaders behind a control socket that answers ``status`` with
    their state, the part of the daemon's status doctor reads."""

    config: Path
    spool: Spool
    uploaders: list[Uploader]

    def answer(self, command: str, args: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "status": {
                "spool": self.spool.stats(),
                "sinks": {u.sink.name: dataclasses.asdict(u.status()) for u in self.uploaders},
            },
        }


@pytest.fixture
def delivery(tmp_path: Path) -> Iterator[Delivery]:
    config = write_config(tmp_path / "doorbell")
    runtime = tmp_path / "doorbell" / "run"
    runtime.mkdir()
    rig = Delivery(config, None, [])  # type: ignore[arg-type]
    server = ControlServer(runtime / SOCKET_NAME, rig.answer)
    server.start()
    try:
        yield rig
    finally:
        server.close()
        for uploader in rig.uploaders:
            uploader.stop(TIMEOUT)
            uploader.sink.close()
        if rig.spool is not None:
            rig.spool.close()


def test_doctor_names_a_failing_sink_since_when_and_what_waits(
    delivery: Delivery,
    tmp_path: Path,
    seal: Any,  # noqa: F811
) -> None:
    delivery.spool = Spool(tmp_path / "spool", 1 << 30, ["s3"])
    objs = [seal(), seal()]
    for sealed in objs:
        delivery.spool.put(sealed, ObjectClass.CLIP, ["s3"])
    backoff = SignallingEvent()
    # The first failure is stamped with this wall clock: 20 minutes ago, then 5 minutes ago.
    started = [time.time() - 20 * 60]
    uploader = Uploader(
        delivery.spool, unreachable_s3_sink(), wall_clock=lambda: started[0], sleep_event=backoff,
        base_delay=3600, max_delay=3600,
    )  # fmt: skip
    delivery.uploaders.append(uploader)
    uploader.start()
    assert backoff.entered.wait(TIMEOUT)  # failed once; waits an hour before the next try

    found = doctor(delivery.config)
    sinks = found["sinks"]
    assert sinks.verdict == FAIL, sinks
    assert re.search(r"s3: failing since \d{4}-\d\d-\d\d \d\d:\d\d UTC \(20 min\)", sinks.detail)
    assert "1 attempt(s) in a row, last error SinkUnavailable: s3://doorbell/ at 127.0.0.1:" in (
        sinks.detail
    )
    size = sum(len(o.data) for o in objs)
    assert f"2 object(s), {size / 2**20:.1f} MiB waiting" in sinks.detail
    assert found["spool"].verdict == PASS, found["spool"]
    assert found["spool"].detail.startswith(f"2 object(s), {size / 2**20:.1f} MiB waiting, ")

    assert uploader.stop(TIMEOUT)
    uploader.sink.close()
    delivery.uploaders.clear()
    backoff = SignallingEvent()
    recent = Uploader(
        delivery.spool, unreachable_s3_sink(), wall_clock=lambda: time.time() - 5 * 60,
        sleep_event=backoff, base_delay=3600, max_delay=3600,
    )  # fmt: skip
    delivery.uploaders.append(recent)
    recent.start()
    assert backoff.entered.wait(TIMEOUT)
    sinks = doctor(delivery.config)["sinks"]
    assert sinks.verdict == WARN and "(5 min)" in sinks.detail, sinks


def test_doctor_fails_a_full_spool_and_warns_of_a_kept_queue(
    small_disk: Path,  # noqa: F811 - first: unmounted after the spool on it is closed
    delivery: Delivery,
    seal: Any,  # noqa: F811
) -> None:
    # A sink removed from the configuration left a segment no configured sink takes.
    with Spool(small_disk / "spool", 1 << 30, ["old"]) as spool:
        spool.put(seal(1000), ObjectClass.CLIP, ["old"])
    delivery.spool = Spool(
        small_disk / "spool", 1 << 30, ["s3"], reserve_bytes=1 << 20,
        wants=lambda sink, kind: kind is Kind.EVENT,
    )  # fmt: skip
    delivery.uploaders.append(Uploader(delivery.spool, unreachable_s3_sink()))  # not started: idle
    found = doctor(delivery.config)
    assert found["spool"].verdict == WARN, found["spool"]
    assert "1 object(s) wait for sink 'old', which is no longer configured" in (
        found["spool"].detail
    )
    assert found["sinks"].verdict == FAIL  # an uploader that is not running

    while True:  # rings until the disk is full; nothing there may be evicted
        try:
            delivery.spool.put(seal(200_000, kind=Kind.EVENT), ObjectClass.ESSENTIAL, ["s3"])
        except OSError:
            break
    spool = doctor(delivery.config)["spool"]
    assert spool.verdict == FAIL, spool
    assert spool.detail.startswith("FULL: nothing left to evict")
    assert "1 object(s) could not be spooled since the daemon started" in spool.detail
    assert "No space left on device" in spool.detail


def test_doctor_reads_a_running_daemon_whose_s3_sink_is_down(tmp_path: Path) -> None:
    endpoint = f"127.0.0.1:{closed_port()}"
    rig = DaemonRig(
        tmp_path,
        extra={"sinks": {"s3": {"enabled": True, "endpoint": endpoint, "bucket": "doorbell",
                                "secure": False}}},
    )  # fmt: skip
    rig.start(env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"})
    try:
        rig.wait_ready()
        # The daemon is another process: its status is polled, with a deadline.
        wait_for(lambda: rig.status()["sinks"]["s3"]["failures"] >= 1, 30, "the s3 sink to fail")
        found = doctor(rig.config)
        assert found["sinks"].verdict == WARN, found["sinks"]
        assert "s3: failing since " in found["sinks"].detail
        assert f"s3://doorbell/ at {endpoint}" in found["sinks"].detail
        assert "local: ok, " in found["sinks"].detail
        assert found["spool"].verdict == PASS, found["spool"]
        assert rig.stop() == 0
    finally:
        rig.kill()


# -- post-quantum protection of the enrolled phones ------------------------------------------


def _phones_line(config: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """The ``phones`` line of ``doorbell doctor``, through the real command line."""
    main(["doctor", "-c", str(config)])
    out = capsys.readouterr().out
    [line] = [line for line in out.splitlines() if line.split()[1:2] == ["phones"]]
    return line


def test_doctor_says_which_phone_takes_the_post_quantum_protection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    state = str(tmp_path / "state")
    hybrid = RecipientPrivateKey.generate(Suite.MLKEM768_X25519).public_key().to_string()
    assert main(["keys", "--state", state, "add", "alice", hybrid]) == 0
    assert _phones_line(config, capsys) == (
        "PASS  phones   1 phone(s), epoch 1, suites mlkem768-x25519; "
        "footage is post-quantum protected"
    )

    classical = RecipientPrivateKey.generate(Suite.X25519).public_key().to_string()
    assert main(["keys", "--state", state, "add", "bob", classical, "--allow-classical"]) == 0
    today = datetime.now(UTC).strftime("%Y-%m-%d")
    assert _phones_line(config, capsys) == (
        "WARN  phones   2 phone(s), epoch 2, suites mlkem768-x25519, x25519; footage is NOT "
        "post-quantum protected: every object wraps its key for every phone, and 'bob' "
        f"(x25519, allowed {today} by the owner) would let a future quantum computer open "
        "it (revoke, or enrol again with an mlkem768-x25519 key)"
    )

    # A keyring of x25519 phones only: nothing to refuse, and nothing protected either.
    other = write_config(tmp_path / "other")
    state = str(tmp_path / "other" / "state")
    assert main(["keys", "--state", state, "add", "carol", classical]) == 0
    line = _phones_line(other, capsys)
    assert line.startswith("WARN  phones   1 phone(s), epoch 1, suites x25519; footage is NOT ")
    assert "'carol' (x25519) would let a future quantum computer open it" in line


PROC_CGROUPS = "#subsys_name\thierarchy\tnum_cgroups\tenabled\ncpuset\t3\t1\t1\n"


@pytest.mark.parametrize(
    ("text", "enabled"),
    [
        (PROC_CGROUPS + "memory\t4\t23\t1\n", True),
        # A Raspberry Pi kernel without cgroup_enable=memory lists it, disabled.
        (PROC_CGROUPS + "memory\t0\t1\t0\n", False),
        (PROC_CGROUPS, None),
    ],
)
def test_doctor_reads_whether_the_memory_limits_apply(
    tmp_path: Path, text: str, enabled: bool | None
) -> None:
    cgroups = tmp_path / "cgroups"
    cgroups.write_text(text)
    assert memory_cgroup_enabled(cgroups) is enabled
    assert memory_cgroup_enabled(tmp_path / "absent") is None


def test_doctor_says_whether_the_kernel_enforces_the_memory_limits() -> None:
    (check,) = [c for c in run_checks(None) if c.name == "memory"]
    if memory_cgroup_enabled():
        assert check.verdict == PASS
    else:
        assert check.verdict == WARN and "cgroup_enable=memory" in check.detail
