"""The web phone (web/): its JavaScript reader and protocol against the committed
vectors (``node --test``), a reproducible build, and the end-to-end run in headless
Chromium against the real daemon, broker and S3 server (web/e2e/)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WEB = ROOT / "web"
CHROMIUM = Path(os.environ.get("DOORBELL_CHROMIUM", "/usr/bin/chromium"))


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("the web phone's tests need Node.js 20: scripts/test checks for it")
    if not (WEB / "node_modules").is_dir():
        pytest.fail("web/node_modules is missing: run scripts/web-build (scripts/test does)")
    return node


def _run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float) -> str:
    run = subprocess.run(
        argv,
        cwd=WEB,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-20000:]
    return output


def _build(out: Path) -> Path:
    _run([_node(), "build.mjs", str(out)], timeout=120)
    return out


@pytest.fixture(scope="session")
def web_dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("web") / "dist")


def test_the_js_reader_and_protocol_pass_the_vectors() -> None:
    output = _run([_node(), "--test", "--test-reporter=spec", "test/"], timeout=300)
    assert "fail 0" in output, output[-5000:]


def test_the_build_is_reproducible(web_dist: Path, tmp_path: Path) -> None:
    again = _build(tmp_path / "again")
    first = {p.relative_to(web_dist): p.read_bytes() for p in web_dist.rglob("*") if p.is_file()}
    second = {p.relative_to(again): p.read_bytes() for p in again.rglob("*") if p.is_file()}
    assert first.keys() == second.keys()
    assert [name for name in first if first[name] != second[name]] == []
    assert {"index.html", "app.js", "sw.js", "style.css", "manifest.webmanifest"} <= {
        str(name) for name in first
    }


def test_nothing_in_the_build_comes_from_another_origin(web_dist: Path) -> None:
    html = (web_dist / "index.html").read_text()
    for attribute in ('src="http', "src='http", 'href="http', "href='http", "//cdn", "@import"):
        assert attribute not in html
    assert "Content-Security-Policy" in html
    assert "'unsafe-inline'" not in html and "'unsafe-eval'" not in html
    bundle = (web_dist / "app.js").read_text()
    assert "import(" not in bundle.replace("import()", "")  # no module loaded at run time
    assert "eval(" not in bundle and "new Function" not in bundle


def test_the_web_phone_end_to_end_in_chromium(web_dist: Path) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
    env = {"DOORBELL_WEB_DIST": str(web_dist), "DOORBELL_PYTHON": sys.executable}
    output = _run([_node(), "--test", "--test-reporter=spec", "e2e/"], env=env, timeout=420)
    assert "fail 0" in output, output[-5000:]
