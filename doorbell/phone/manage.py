"""An owner phone manages its doorbell without SSH (docs/PROTOCOL.md sections 7 and 8):
``invite``, ``revoke`` and ``recovery create`` send signed commands through the broker
the phone enrolled with and wait for the doorbell's signed answer; ``recover`` rebuilds
a phone from the recovery words."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as paho

from doorbell.phone.client import BrokerSession, ClientSetupError
from doorbell.phone.home import Broker, PhoneHome
from doorbell.sealing import DevicePublicKey, KeyFileError, SealingError, recovery
from doorbell.sealing import commands as proto

EXIT_OK, EXIT_REFUSED = 0, 1
ANSWER_SECONDS = 10.0
POLL_SECONDS = 0.3
CONFIRM_SECONDS = 300.0


class ManageError(Exception):
    """The command cannot be sent: no broker known, bad options. Exit 2."""


class Refused(Exception):
    """The doorbell answered no; the text is its reason."""


@dataclass(frozen=True)
class Access:
    """How to log in to the broker, when it needs it."""

    username: str | None = None
    password_file: Path | None = None
    ca_file: Path | None = None


class Screen:
    def __init__(self, out: IO[str], as_json: bool) -> None:
        self.out = out
        self.json = as_json

    def say(self, record: dict[str, Any], line: str) -> None:
        if self.json:
            if record:
                print(json.dumps(record, ensure_ascii=False), file=self.out, flush=True)
        elif line:
            print(line, file=self.out, flush=True)


class Remote:
    """One doorbell as this phone reaches it: signed commands out, signed answers in."""

    def __init__(
        self, home: PhoneHome, access: Access, max_payload: int = proto.MAX_ANSWER
    ) -> None:
        brokers = home.brokers()
        if not brokers:
            raise ManageError(
                "this phone knows no doorbell's broker: it manages a doorbell it enrolled "
                "with over the network ('doorbell-phone enroll')"
            )
        self.home = home
        self.broker: Broker = brokers[-1]
        self.device: DevicePublicKey = self.broker.device
        self._signing = home.signing_key()
        self._identity = home.identity()
        try:
            self._session = BrokerSession(
                self.broker.host,
                self.broker.port,
                tls=self.broker.tls or access.ca_file is not None,
                username=access.username,
                password_file=access.password_file,
                ca_file=access.ca_file,
                topics=[],
                max_payload=max_payload,
            )
        except ClientSetupError as exc:
            raise ManageError(str(exc)) from None
        self._prefix = f"{self.broker.prefix}/{self.device.device_id.hex()[:16]}"
        self._stash: list[tuple[str, bytes]] = []

    def __enter__(self) -> Remote:
        try:
            self._session.open(ANSWER_SECONDS)
        except ClientSetupError as exc:
            raise ManageError(str(exc)) from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._session.close()

    @property
    def prefix(self) -> str:
        """The doorbell's topics under the broker: ``<prefix>/<device id>``."""
        return self._prefix

    def subscribe(self, topic: str) -> None:
        if self._session.client.subscribe(topic, qos=0)[0] != paho.MQTT_ERR_SUCCESS:
            raise ManageError(f"cannot subscribe at {self._session.address}")

    def next_message(self, deadline: float) -> tuple[str, bytes] | None:
        """The next message on another subscription than an answer's (live fragments)."""
        if self._stash:
            return self._stash.pop(0)
        return self._session.next(deadline)

    def call(self, name: str, args: dict[str, Any], nonce: bytes | None = None) -> dict[str, Any]:
        """Send one signed command and return the doorbell's answer; Refused when it
        says no, ManageError when it does not answer."""
        payload, nonce = proto.sign_command(
            self._signing, self.device.device_id, name, args, time.time(), nonce
        )
        answer_topic = f"{self._prefix}/{proto.ANSWER_LEAF}/{nonce.hex()}"
        client = self._session.client
        if client.subscribe(answer_topic, qos=1)[0] != paho.MQTT_ERR_SUCCESS:
            raise ManageError(f"cannot subscribe at {self._session.address}")
        # The subscription's acknowledgement is not awaited: the broker handles one
        # client's packets in order, so the command published next comes after it.
        self._session.publish(f"{self._prefix}/{proto.COMMAND_LEAF}", payload)
        deadline = time.monotonic() + ANSWER_SECONDS
        try:
            while True:
                received = self._session.next(deadline)
                if received is None:
                    raise ManageError(
                        f"the doorbell did not answer within {ANSWER_SECONDS:g} s "
                        f"(is it running and connected to {self._session.address}?)"
                    )
                topic, raw = received
                if topic != answer_topic:
                    if not topic.startswith(f"{self._prefix}/{proto.ANSWER_LEAF}/"):
                        self._stash.append(received)  # a live fragment, kept for its reader
                    continue
                try:
                    body = proto.open_answer(raw, self.device, nonce, self._identity)
                except SealingError:
                    continue  # not the doorbell's: anyone can publish on a broker
                if not body.get("ok"):
                    raise Refused(str(body.get("reason", "refused"))[:1000])
                return body
        finally:
            client.unsubscribe(answer_topic)


def invite(
    home: PhoneHome,
    access: Access,
    request: dict[str, Any],
    screen: Screen,
    answers: IO[str],
) -> int:
    """Open an enrolment window for a new phone; this owner phone shows the code and
    confirms it."""
    with Remote(home, access) as remote:
        try:
            opened = remote.call("invite", request)
            window = opened["window"]
            screen.say(
                {"link": opened["link"], "window": window},
                f"Give the new phone this link (it works once):\n{opened['link']}",
            )
            deadline = time.monotonic() + CONFIRM_SECONDS + 600
            confirmed = False
            while time.monotonic() < deadline:
                state = remote.call("window-state", {"window": window})
                if state["state"] == "enrolled":
                    screen.say({"enrolled": state["enrolled"]}, f"enrolled {state['enrolled']!r}")
                    return EXIT_OK
                if state["state"] == "refused":
                    screen.say({"refused": state["refused"]}, f"refused: {state['refused']}")
                    return EXIT_REFUSED
                if state["state"] == "confirming" and not confirmed:
                    confirmed = True
                    code = state["code"]
                    screen.say(
                        {
                            "code": code,
                            "phone": state["phone"],
                            "fingerprint": state["fingerprint"],
                        },
                        f"phone {state['phone']!r} ({state['fingerprint']}) asks to join.\n"
                        f"Its screen must show the code   {code}\nType yes if it does:",
                    )
                    if answers.readline().strip().lower() == "yes":
                        remote.call("window-confirm", {"window": window, "code": code})
                    else:
                        remote.call("window-cancel", {"window": window})
                    continue
                time.sleep(POLL_SECONDS)
        except Refused as exc:
            screen.say({"refused": str(exc)}, str(exc))
            return EXIT_REFUSED
    screen.say({"refused": "no end in time"}, "refused: the enrolment did not end in time")
    return EXIT_REFUSED


def revoke(home: PhoneHome, access: Access, name: str, screen: Screen) -> int:
    with Remote(home, access) as remote:
        try:
            answer = remote.call("revoke", {"name": name})
        except Refused as exc:
            screen.say({"refused": str(exc)}, str(exc))
            return EXIT_REFUSED
    screen.say(
        {"revoked": answer["revoked"], "epoch": answer["epoch"]},
        f"revoked {answer['revoked']!r}; keyring epoch {answer['epoch']}: nothing sealed from "
        "now on opens for it",
    )
    return EXIT_OK


def create_recovery(home: PhoneHome, access: Access, screen: Screen) -> int:
    """Make a recovery key, enrol it (replacing any earlier one) and show its words once."""
    key = recovery.RecoveryKey.generate()
    with Remote(home, access) as remote:
        try:
            answer = remote.call("set-recovery", {"identity": key.identity.to_string()})
        except Refused as exc:
            screen.say({"refused": str(exc)}, str(exc))
            return EXIT_REFUSED
        device = remote.device
    show_words(key, device, screen, answer.get("epoch"))
    return EXIT_OK


def show_words(
    key: recovery.RecoveryKey, device: DevicePublicKey, screen: Screen, epoch: Any = None
) -> None:
    words = key.words
    numbered = "\n".join(
        "  " + "   ".join(f"{i + 1:>2}. {words[i]:<9}" for i in range(row, 24, 6))
        for row in range(6)
    )
    screen.say(
        {"words": words, "device": device.to_string()},
        "Your recovery key. Write these 24 words on paper, in order, and keep them safe:\n"
        f"{numbered}\n"
        f"and the doorbell's key, to check it with when you recover:\n  {device.to_string()}\n"
        "They are shown this once and stored nowhere. With them a new phone reads every "
        "clip sealed from now on ('doorbell-phone recover')."
        + ("" if epoch is None else f" Keyring epoch {epoch}."),
    )


def recover(
    home: PhoneHome, device_text: str, words: str, screen: Screen, broker: Broker | None = None
) -> int:
    """A fresh phone home from the recovery words; it trusts ``device_text``, and reaches
    the doorbell through ``broker`` when given."""
    try:
        device = DevicePublicKey.from_string(device_text)
    except SealingError as exc:
        raise ManageError(f"--device: {exc}") from None
    key = recovery.RecoveryKey.from_words(words)
    try:
        home.adopt(key.secret, key.signing)
    except KeyFileError as exc:
        raise ManageError(str(exc)) from None
    home.trust(device, "doorbell")
    if broker is not None:
        home.remember_broker(Broker(device, broker.host, broker.port, broker.tls, broker.prefix))
    screen.say(
        {"recovered": key.identity.key.fingerprint, "device": device.fingerprint},
        f"recovered the recovery key ({key.identity.key.fingerprint}) into {home.directory}; "
        f"trusting doorbell {device.fingerprint}. It reads every clip sealed since the key "
        "was made, and may act as an owner.",
    )
    return EXIT_OK
