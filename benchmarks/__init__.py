"""Doorbell's benchmarks, run by scripts/bench from a checkout; never installed on a doorbell.

They drive the tests' own harnesses (the Mosquitto broker in tests/mqtt_fixture.py, the
footage helpers in tests/chain_builder.py), so the tests folder is importable from here.
"""

import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent / "tests"
if str(TESTS) not in sys.path:
    sys.path.append(str(TESTS))
