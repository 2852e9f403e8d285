"""The doorbell side of the web phone's end-to-end tests and benchmark, as one process.

It starts a real Mosquitto with a WebSocket listener in front of it, a moto S3 server
whose bucket allows the web app's origin (CORS), a real daemon (S3 sink, MQTT on, no
phone enrolled yet) and ``doorbell-phone web`` serving the built app. It prints one
JSON line with the addresses, then takes one JSON command per line on stdin and
answers each with one JSON line (``{"error": ...}`` when it fails):

- ``{"op": "enroll", "args": [...]}``: start ``doorbell enroll --json``; answers the link.
- ``{"op": "enroll-code"}``: the code the doorbell shows, once the phone said hello.
- ``{"op": "confirm"}``: type ``yes`` at the doorbell; answers its exit status.
- ``{"op": "ring"}``: press the button (the control socket's ``ring``).
- ``{"op": "wait-clip"}``: wait until the last clip ended and is in the bucket.
- ``{"op": "tamper"}``: flip one byte of a media segment in the bucket; answers its name.
- ``{"op": "copy"}``: the bucket's objects copied into a folder; answers its path.
- ``{"op": "qr-video", "text": ...}``: the text as a QR code in a Y4M video; answers its path.

End of input stops everything. Usage: web_rig.py [JSON options]; options: ``dist``
(the built app; default web/dist).
"""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from daemon_harness import DaemonRig, wait_for  # noqa: E402
from enrol_harness import Lines, enroll  # noqa: E402
from minio import Minio  # noqa: E402
from moto.server import ThreadedMotoServer  # noqa: E402
from mqtt_fixture import Mosquitto  # noqa: E402
from s3_fixture import S3_ENV, S3Server, cors_as_s3, cors_rule, daemon_s3_config, put_cors  # noqa: E402

from doorbell.sealing import Suite, load_device_key  # noqa: E402

PREFIX = "doorbells/"


@contextlib.contextmanager
def web_app(dist: Path) -> Iterator[str]:
    """``doorbell-phone web`` serving ``dist`` on a free loopback port: its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "doorbell.phone", "web", "--port", "0", "--dir", str(dist)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            if "http://127.0.0.1:" in line:
                yield line[line.index("http://") :].split()[0]
                break
        else:
            raise RuntimeError(f"doorbell-phone web exited with {process.wait()}")
    finally:
        process.terminate()
        process.wait(timeout=30)


def bucket_for_page(endpoint: str, origin: str) -> S3Server:
    """A bucket whose CORS rule lets the page at ``origin`` list and read it."""
    client = Minio(
        endpoint, access_key="testing", secret_key="testing", secure=False, region="us-east-1"
    )
    bucket = "doorbell-web"
    client.make_bucket(bucket)
    put_cors(endpoint, bucket, cors_rule(origin))
    return S3Server(endpoint, "testing", "testing", "us-east-1", bucket, client)


def say(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


class WebRig:
    def __init__(self, root: Path, options: dict[str, Any], stack: contextlib.ExitStack) -> None:
        from mqtt_fixture import websocket_bridge

        self.root = root
        broker_dir = root / "mosquitto"
        broker_dir.mkdir()
        self.broker = Mosquitto(broker_dir, secure=False)
        self.broker.start()
        stack.callback(self.broker.stop)
        self.ws = stack.enter_context(websocket_bridge(self.broker))
        cors_as_s3()
        moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        moto.start()
        stack.callback(moto.stop)
        host, port = moto.get_host_and_port()
        endpoint = f"{host}:{port}"
        dist = Path(options.get("dist") or ROOT / "web" / "dist")
        self.app = stack.enter_context(web_app(dist))
        self.s3 = bucket_for_page(endpoint, self.app.rstrip("/"))
        mqtt = {"enabled": True, "host": self.broker.host, "port": self.broker.port, "keepalive": 5}
        extra = {"mqtt": mqtt, **daemon_s3_config(endpoint, self.s3.bucket, PREFIX)}
        self.rig = DaemonRig(
            root / "doorbell", enrol=False, suite=Suite.MLKEM768_X25519, extra=extra
        )
        self.rig.start(env=S3_ENV)
        stack.callback(self.rig.kill)
        self.rig.wait_ready()
        wait_for(lambda: self.rig.status()["mqtt"]["connected"], 20, "the daemon's MQTT link")
        self.enrolment: tuple[Any, Lines] | None = None

    def info(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "ws": self.ws,
            "s3": {
                "endpoint": f"http://{self.s3.endpoint}",
                "region": self.s3.region,
                "bucket": self.s3.bucket,
                "prefix": PREFIX,
                "accessKeyId": self.s3.access_key,
                "secretAccessKey": self.s3.secret_key,
            },
            "config": str(self.rig.config),
            "device": load_device_key(self.rig.state)[0].public_key.to_string(),
        }

    def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command.get("op")
        if op == "enroll":
            self.enrolment = enroll(self.rig, *command.get("args", []))
            return {"link": self.enrolment[1].wait_for("link")["link"]}
        if op == "enroll-code":
            assert self.enrolment is not None, "no enrolment running"
            return {"code": self.enrolment[1].wait_for("code")["code"]}
        if op == "confirm":
            assert self.enrolment is not None, "no enrolment running"
            process, lines = self.enrolment
            process.stdin.write("yes\n")
            process.stdin.flush()
            code = process.wait(timeout=60)
            self.enrolment = None
            return {"exit": code, "lines": lines.lines}
        if op == "ring":
            return {"answer": self.rig.command("ring")}
        if op == "wait-clip":
            wait_for(self._clip_delivered, 90, "the clip's end in the bucket")
            return {"objects": len(self._names())}
        if op == "tamper":
            return {"name": self._tamper()}
        if op == "copy":
            return {"folder": str(self._copy())}
        if op == "qr-video":
            return {"video": str(self._qr_video(str(command["text"])))}
        raise ValueError(f"unknown op {op!r}")

    def _names(self) -> list[str]:
        return self.s3.keys(PREFIX)

    def _clip_delivered(self) -> bool:
        status = self.rig.status()
        if not status.get("clips") or status.get("clip") is not None:
            return False
        return all(sink["pending"] == 0 for sink in status["sinks"].values())

    def _copy(self) -> Path:
        """The bucket's objects in a folder of their own, as a person would download them."""
        folder = self.root / "copy"
        folder.mkdir(exist_ok=True)
        for name in self._names():
            (folder / name.rsplit("/", 1)[-1]).write_bytes(self.s3.get(name))
        return folder

    def _qr_video(self, text: str) -> Path:
        """``text`` as the QR code `doorbell enroll` shows, filmed: a Y4M file a browser's
        fake camera plays (Chromium's --use-file-for-fake-video-capture)."""
        import segno

        picture = self.root / "qr.png"
        segno.make(text, error="m").save(picture, scale=6, border=4)
        video = self.root / "qr.y4m"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", "-loop", "1", "-i", str(picture), "-t", "2",
             "-vf", "scale=640:640:flags=neighbor,format=yuv420p", "-r", "10", str(video)],
            check=True,
        )  # fmt: skip
        return video

    def _tamper(self) -> str:
        """Flip one byte in the ciphertext of the largest object (a media segment)."""
        names = self._names()
        sizes = {name: len(self.s3.get(name)) for name in names}
        name = max(names, key=lambda n: sizes[n])
        data = bytearray(self.s3.get(name))
        data[len(data) // 2] ^= 0x01
        self.s3.client.put_object(self.s3.bucket, name, io.BytesIO(data), len(data))
        return name.rsplit("/", 1)[-1]


def main() -> int:
    options = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    with (
        tempfile.TemporaryDirectory(prefix="doorbell-web-rig-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        try:
            rig = WebRig(Path(tmp), options, stack)
        except Exception as exc:  # the caller shows it and gives up
            say({"error": f"{type(exc).__name__}: {exc}"})
            return 1
        say(rig.info())
        for line in sys.stdin:
            if not line.strip():
                continue
            try:
                say(rig.handle(json.loads(line)))
            except Exception as exc:  # one failed command is the caller's to judge
                say({"error": f"{type(exc).__name__}: {exc}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
