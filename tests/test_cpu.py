"""Reading AES support from /proc/cpuinfo, as a Pi 4, a Pi 5 and x86 write it."""

from __future__ import annotations

from pathlib import Path

import pytest

from doorbell import cpu

PI4 = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
PI5 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"
X86 = "processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu sse2 aes avx2 sha_ni\n"


@pytest.mark.parametrize(
    ("text", "aes"), [(PI4, False), (PI5, True), (X86, True), ("processor\t: 0\n", None)]
)
def test_aes_instructions(tmp_path: Path, text: str, aes: bool | None) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    assert cpu.has_aes(cpu.cpuinfo(path)) is aes


def test_first_value_of_each_field_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "cpuinfo"
    path.write_text(X86 + "processor\t: 1\nmodel name\t: Another\n")
    assert cpu.cpuinfo(path)["model name"] == "Some Xeon"
    assert cpu.cpuinfo(tmp_path / "absent") == {}
    assert cpu.has_aes({}) is None
