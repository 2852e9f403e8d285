"""``doorbell-phone web`` through real sockets: the headers that keep the page to itself,
the types browsers insist on, nothing outside the app's folder however the path is
written, and clear words when there is no app or no port."""

from __future__ import annotations

import http.client
import selectors
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from doorbell.phone.web import CONTENT_SECURITY_POLICY, DEFAULT_DIST

ROOT = Path(__file__).resolve().parents[1]
SECRET = b"the phone's secret key, outside the app"
INDEX = b"<!doctype html><title>Doorbell</title>"


@dataclass
class Served:
    process: subprocess.Popen[str]
    port: int
    first_line: str

    def ask(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[http.client.HTTPResponse, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path, headers=headers or {})
            response = connection.getresponse()
            return response, response.read()
        finally:
            connection.close()

    def raw(self, request_line: str) -> bytes:
        """Send ``request_line`` as it is written, no client tidying it: the whole answer."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as connection:
            head = f"{request_line}\r\nHost: 127.0.0.1:{self.port}\r\nConnection: close\r\n"
            connection.sendall(f"{head}\r\n".encode())
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
        return answer


def first_line(process: subprocess.Popen[str], timeout: float = 20) -> str:
    """The first line the command prints, waiting at most ``timeout`` seconds."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        assert selector.select(timeout), f"doorbell-phone web said nothing in {timeout} s"
    return process.stdout.readline()


def start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "doorbell.phone", "web", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def dist(tmp_path: Path) -> Path:
    """A built app beside a secret it must never serve."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    app = tmp_path / "dist"
    app.mkdir()
    (app / "index.html").write_bytes(INDEX)
    (app / "app.js").write_text("console.log('doorbell');\n")
    (app / "sw.js").write_text("self.addEventListener('fetch', () => {});\n")
    (app / "style.css").write_text("body { margin: 0 }\n")
    (app / "manifest.webmanifest").write_text('{"name": "Doorbell"}\n')
    (app / "icon.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>\n")
    (app / "decoder.wasm").write_bytes(b"\0asm\1\0\0\0")
    (app / "app.js.LEGAL.txt").write_text("licences\n")
    (app / "assets").mkdir()
    (app / "assets" / "a.js").write_text("export {};\n")
    (app / ".env").write_text("hidden\n")
    (app / "outside").symlink_to(tmp_path / "secret.txt")
    return app


@pytest.fixture
def served(dist: Path) -> Iterator[Served]:
    process = start("--port", "0", "--dir", str(dist))
    try:
        line = first_line(process)
        assert "http://127.0.0.1:" in line, (line, process.stderr.read() if process.stderr else "")
        port = int(line.split("http://127.0.0.1:", 1)[1].split("/", 1)[0])
        yield Served(process, port, line)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def test_it_says_where_the_app_is_and_serves_it_with_the_headers_that_keep_it_to_itself(
    served: Served, dist: Path
) -> None:
    assert served.first_line == (
        f"doorbell-phone: the web phone is at http://127.0.0.1:{served.port}/ "
        f"(from {dist.resolve()}; Ctrl-C stops it)\n"
    )
    response, body = served.ask("GET", "/")
    assert response.status == 200
    assert body == INDEX
    headers = response.headers
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "camera=(self)" in headers["Permissions-Policy"]
    policy = dict(
        [*directive.split(" ", 1), ""][:2]
        for directive in headers["Content-Security-Policy"].split("; ")
    )
    assert policy == {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": "'self' blob: data:",
        "media-src": "'self' blob:",
        "connect-src": "'self' ws: wss: http: https:",
        "object-src": "'none'",
        "base-uri": "'none'",
        "frame-ancestors": "'none'",
        "form-action": "'none'",
        "worker-src": "'self'",
        "manifest-src": "'self'",
    }
    assert headers["Server"] == "doorbell-phone"  # no Python version for anyone to read
    assert served.ask("GET", "/index.html")[1] == INDEX


def test_every_file_has_the_type_a_browser_insists_on(served: Served) -> None:
    types = {
        "/app.js": "text/javascript; charset=utf-8",
        "/sw.js": "text/javascript; charset=utf-8",
        "/style.css": "text/css; charset=utf-8",
        "/manifest.webmanifest": "application/manifest+json",
        "/icon.svg": "image/svg+xml",
        "/decoder.wasm": "application/wasm",
        "/app.js.LEGAL.txt": "text/plain; charset=utf-8",
        "/assets/a.js": "text/javascript; charset=utf-8",
        "/app.js?v=2": "text/javascript; charset=utf-8",
    }
    for path, content_type in types.items():
        response, body = served.ask("GET", path)
        assert (response.status, response.headers["Content-Type"]) == (200, content_type), path
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert int(response.headers["Content-Length"]) == len(body)


def test_head_and_revalidation_send_no_body(served: Served) -> None:
    response, body = served.ask("HEAD", "/app.js")
    assert response.status == 200
    assert body == b""
    assert response.headers["Content-Length"] == str(len("console.log('doorbell');\n"))
    tag = response.headers["ETag"]
    again, body = served.ask("GET", "/app.js", {"If-None-Match": tag})
    assert (again.status, body) == (304, b"")


def test_nothing_outside_the_app_is_served_however_the_path_is_written(served: Served) -> None:
    refused = [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/secret.txt",
        "/%2e%2e%2fsecret.txt",
        "/assets/..%2f..%2fsecret.txt",
        "/assets/%2e%2e/%2e%2e/secret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
        "/%252e%252e/secret.txt",
        "//secret.txt",
        f"/{Path(served.first_line.split('from ')[1].split(';')[0]).parent}/secret.txt",
        "/outside",
        "/.env",
        "/%2eenv",
        "/index.html%00.js",
        "/%ff",
        "http://127.0.0.1/../secret.txt",
    ]
    for target in refused:
        answer = served.raw(f"GET {target} HTTP/1.1")
        status = answer.split(b"\r\n", 1)[0]
        assert status == b"HTTP/1.1 404 Not Found", (target, status)
        assert SECRET not in answer, target
        assert b"Content-Security-Policy: default-src 'self'" in answer, target


def test_folders_are_not_listed(served: Served) -> None:
    for path in ("/assets/", "/assets", "/assets//a.js"):
        response, body = served.ask("GET", path)
        assert response.status == 404, path
        assert b"a.js" not in body


def test_only_reading_is_answered_and_only_for_this_computer(served: Served) -> None:
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        response, _ = served.ask(method, "/")
        assert (response.status, response.headers["Allow"]) == (405, "GET, HEAD"), method
        assert response.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    # A page of another site reaching this port through a name of its own gets nothing.
    response, body = served.ask("GET", "/", {"Host": "evil.example"})
    assert response.status == 421
    assert INDEX not in body
    response, body = served.ask("GET", "/", {"Host": f"localhost:{served.port}"})
    assert (response.status, body) == (200, INDEX)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_stops_it_cleanly(served: Served, stop: signal.Signals) -> None:
    served.process.send_signal(stop)
    assert served.process.wait(10) == 0
    assert served.process.stderr is not None
    assert "Traceback" not in served.process.stderr.read()


def test_without_a_built_app_it_says_how_to_build_one(tmp_path: Path) -> None:
    process = start("--port", "0", "--dir", str(tmp_path / "nothing"))
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert err == (
        f"doorbell-phone: the web phone is not built: run scripts/web-build {tmp_path / 'nothing'}"
        f" (it needs Node.js 20 and npm); {tmp_path / 'nothing'} has no index.html\n"
    )
    assert DEFAULT_DIST == ROOT / "web" / "dist"


def test_a_port_in_use_is_named(dist: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = start("--port", str(port), "--dir", str(dist))
        out, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert out == ""
    assert err.startswith(f"doorbell-phone: port {port} on 127.0.0.1 is in use")
    assert "--port" in err
    assert "Traceback" not in err


def test_a_port_that_is_no_port_is_refused(dist: Path) -> None:
    process = start("--port", "70000", "--dir", str(dist))
    _, err = process.communicate(timeout=30)
    assert process.returncode == 2
    assert "a port is 0 to 65535" in err
