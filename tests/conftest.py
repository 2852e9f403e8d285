"""Shared fixtures: a device state directory, phones enrolled in it, and a daemon rig."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

# Harnesses whose asserts the tests rely on, registered before any test module imports
# one of them (a later registration finds them imported and cannot rewrite them).
pytest.register_assert_rewrite("mqtt_fixture", "enrol_harness", "daemon_harness", "s3_fixture")

from daemon_harness import DaemonRig  # noqa: E402

from doorbell.sealing import KeyringStore, RecipientPrivateKey, Suite  # noqa: E402

# A fixed capture clock: every object sealed with it carries this time.
FIXED_TIME = 1_764_450_000.25


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """A device state directory that does not exist yet (the sealer creates it, 0700)."""
    return tmp_path / "state"


Enrol = Callable[..., RecipientPrivateKey]


@pytest.fixture
def enrol(state_dir: Path) -> Enrol:
    """``enrol(name, suite=Suite.X25519)``: a new phone key, added to the state keyring."""

    def enrol(name: str, suite: Suite = Suite.X25519) -> RecipientPrivateKey:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = RecipientPrivateKey.generate(suite)
        with KeyringStore(state_dir).editing() as box:
            box[0] = box[0].add(name, key.public_key(), datetime.now(UTC))
        return key

    return enrol


@pytest.fixture
def fixed_clock() -> Callable[[], float]:
    return lambda: FIXED_TIME


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[DaemonRig]:
    """A daemon on the synthetic camera in ``tmp_path``, killed after the test if still up."""
    rig = DaemonRig(tmp_path)
    yield rig
    rig.kill()
