"""The package's layers depend one way, and only on each other's public names.

    common ← sealing ← capture ← events ← daemon
                     ← transport ←───────┘
             sealing ← phone

`common` holds the few helpers the device and the phone share (topic names,
secret files, TLS and S3 client set-up, file locks); `config` is the device's
settings, read by the device layers. The phone never imports the device's
transport, config or daemon: a phone is a separate program that shares only the
format. Outside `sealing`, only the names `doorbell.sealing` exports are used.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "doorbell"

# Which top-level parts of the package each part may import (itself included).
ALLOWED: dict[str, set[str]] = {
    "common": {"common"},
    "sealing": {"common", "sealing"},
    "config": {"common", "config"},
    "capture": {"common", "sealing", "capture"},
    "events": {"common", "sealing", "capture", "events"},
    "transport": {"common", "sealing", "config", "transport"},
    "phone": {"common", "sealing", "phone"},
}


def _part(module: str) -> str:
    """`doorbell.phone.sync` -> `phone`; `doorbell` itself -> `` (the version only)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) for every `doorbell` import in a file, however nested."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "doorbell" or node.module.startswith("doorbell."):
                found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("doorbell."):
                    found.append((node.lineno, alias.name, []))
    return found


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_layer_imports_only_the_layers_below_it() -> None:
    wrong = []
    for path in _sources():
        relative = path.relative_to(PACKAGE)
        if len(relative.parts) < 2 or relative.parts[0] not in ALLOWED:
            continue  # the daemon, the CLIs and the demo sit on top and may use anything
        here = relative.parts[0]
        for line, module, _ in _imports(path):
            there = _part(module)
            if there and there not in ALLOWED[here]:
                wrong.append(f"{relative}:{line} ({here}) imports {module}")
    assert not wrong, "\n".join(wrong)


def test_outside_sealing_only_its_public_names_are_used() -> None:
    import doorbell.sealing

    public = set(doorbell.sealing.__all__)
    wrong = []
    for path in _sources():
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] == "sealing":
            continue
        for line, module, names in _imports(path):
            if module.startswith("doorbell.sealing."):
                wrong.append(f"{relative}:{line} imports the private module {module}")
            elif module == "doorbell.sealing":
                wrong += [
                    f"{relative}:{line} imports {n}, not exported" for n in names if n not in public
                ]
    assert not wrong, "\n".join(wrong)


def test_the_firmware_carries_no_benchmark() -> None:
    assert sorted(p.name for p in PACKAGE.rglob("*bench*")) == []
