"""``doorbell-phone web``: serves the built web phone to this computer's browser, on
127.0.0.1 only, with the headers that keep the page to itself.

The page holds the phone's keys, so what matters is where its code comes from:
these files, and nothing else. Every answer carries a Content-Security-Policy that
allows scripts, styles, workers and the manifest from this origin alone, no plugins,
no frames around it, no forms or base URL to send anything elsewhere. Only files in
the app's folder are served: no listing, no dot files, nothing a ``..`` or an
encoded one reaches. 127.0.0.1 is a secure context for browsers, so WebCrypto and
service workers work without a certificate.
"""

from __future__ import annotations

import errno
import http.server
import logging
import os
import shutil
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
DEFAULT_PORT = 8088
# web/dist of the source tree this package sits in, where scripts/web-build puts the app.
DEFAULT_DIST = Path(__file__).resolve().parents[2] / "web" / "dist"

# connect-src is the one open door: the owner's broker (ws:, wss:) and bucket (http:,
# https:) are on origins the person types in, unknown when the page is built. Scripts
# still come from this origin only, so only the page's own code can open those
# connections; all the rest stays 'self' or 'none'.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "media-src 'self' blob:",
        "connect-src 'self' ws: wss: http: https:",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "form-action 'none'",
        "worker-src 'self'",
        "manifest-src 'self'",
    ]
)

HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
    # The service worker keeps the app for offline use; the browser asks here each time
    # (and gets 304 when nothing changed), so a rebuilt app is never stale.
    "Cache-Control": "no-cache",
}

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}


class WebError(Exception):
    """The app cannot be served as asked: no build there, or the port is taken."""


@dataclass(frozen=True)
class App:
    """A built web phone: the folder holding its index.html."""

    directory: Path

    @classmethod
    def at(cls, directory: Path | None) -> App:
        """The app in ``directory``, or in web/dist by default; raises `WebError` naming
        how to build it when there is none."""
        where = directory if directory is not None else DEFAULT_DIST
        if not (where / "index.html").is_file():
            build = "scripts/web-build" + ("" if directory is None else f" {where}")
            raise WebError(
                f"the web phone is not built: run {build} (it needs Node.js 20 and npm); "
                f"{where} has no index.html"
            )
        return cls(where.resolve())

    def file(self, target: str) -> Path | None:
        """The file a request's target names, or None: only a regular file inside the
        folder, named by segments without dot files, ``..``, backslashes or NULs, whether
        written plainly or percent-encoded, and not through a link that leads out."""
        path = target.split("?", 1)[0].split("#", 1)[0]
        if not path.startswith("/"):
            return None
        try:
            path = unquote(path, errors="strict")
        except UnicodeDecodeError:
            return None
        if path == "/":
            path = "/index.html"
        parts = path[1:].split("/")
        if any(not part or part.startswith(".") or "\\" in part or "\0" in part for part in parts):
            return None
        candidate = self.directory.joinpath(*parts)
        try:
            real = candidate.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not real.is_relative_to(self.directory) or not real.is_file():
            return None
        return real


class _Handler(http.server.BaseHTTPRequestHandler):
    app: App
    port: int
    server_version = "doorbell-phone"
    protocol_version = "HTTP/1.1"
    timeout = 30

    def version_string(self) -> str:
        return self.server_version  # no Python version for anyone to read

    def end_headers(self) -> None:
        for name, value in HEADERS.items():
            self.send_header(name, value)
        super().end_headers()

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _refuse_method(self) -> None:
        self.send_response(405)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse_method

    def _answer(self, *, body: bool) -> None:
        # Another host name means another site's page reached us through its own DNS
        # name (DNS rebinding): it gets nothing.
        host = self.headers.get("Host", "")
        if host not in (f"{HOST}:{self.port}", f"localhost:{self.port}"):
            self.send_error(421, "this server answers only http://127.0.0.1 and localhost")
            return
        path = self.app.file(self.path)
        if path is None:
            self.send_error(404)
            return
        try:
            with path.open("rb") as source:
                stat = os.fstat(source.fileno())
                tag = f'"{stat.st_size:x}-{stat.st_mtime_ns:x}"'
                if self.headers.get("If-None-Match") == tag:
                    self.send_response(304)
                    self.send_header("ETag", tag)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", TYPES.get(path.suffix, "application/octet-stream"))
                self.send_header("Content-Length", str(stat.st_size))
                self.send_header("ETag", tag)
                self.end_headers()
                if body:
                    shutil.copyfileobj(source, self.wfile)
        except OSError as exc:
            log.warning("cannot serve %s: %s", path, exc)
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def open_server(app: App, port: int) -> http.server.ThreadingHTTPServer:
    """A server for ``app`` on 127.0.0.1:``port`` (0: a free port), listening; raises
    `WebError` when the port cannot be had."""
    if not 0 <= port <= 65535:
        raise WebError(f"--port {port}: a port is 0 to 65535 (0: any free port)")

    class Handler(_Handler):
        pass

    Handler.app = app
    try:
        server = http.server.ThreadingHTTPServer((HOST, port), Handler)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise WebError(
                f"port {port} on {HOST} is in use (another doorbell-phone web?): stop it, "
                "or choose another with --port (your phone's keys stay with the address "
                "they were made on, so keep to one port)"
            ) from None
        raise WebError(f"cannot listen on {HOST}:{port}: {exc.strerror}") from None
    Handler.port = server.server_address[1]
    return server


def url(server: http.server.ThreadingHTTPServer) -> str:
    return f"http://{HOST}:{server.server_address[1]}/"


def serve_until_stopped(
    server: http.server.ThreadingHTTPServer, announce: Callable[[str], None]
) -> None:
    """Serve until Ctrl-C or SIGTERM (a service manager's stop), then close the socket.

    ``announce`` gets the URL once both stop the server cleanly: whoever reads it may
    stop the server at once."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        announce(url(server))
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
