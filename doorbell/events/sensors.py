"""GPIO devices: the doorbell button, the PIR motion detector, the chime relay and the status LED.

The only module of the program that imports gpiozero. Off a Pi, gpiozero's own
``MockFactory`` stands in for the pins (``make_pin_factory``).

Threads: ``on_ring`` and ``on_motion`` run on gpiozero's threads (the pin
library's edge-callback thread for the button, gpiozero's sampling thread for
the motion sensor; with ``MockFactory``, whichever thread drives the pin). The
callee must return at once and hand the work to its own thread, for example by
putting the event on a ``queue.Queue``: while it runs, the next edge or sample
waits. An exception from a callback is logged and swallowed here, because it
would otherwise end gpiozero's sampling thread and motion would go unseen.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from gpiozero import LED, Button, Device, DigitalOutputDevice, MotionSensor
from gpiozero.pins import Factory
from gpiozero.pins.mock import MockFactory

log = logging.getLogger(__name__)

Pin = int | str
Callback = Callable[[], None]

DEVICE_TREE_MODEL = Path("/proc/device-tree/model")

# name -> (module, class, what it needs when the import fails)
_FACTORIES = {
    "lgpio": ("gpiozero.pins.lgpio", "LGPIOFactory", "the lgpio library (pip install lgpio)"),
    "rpigpio": (
        "gpiozero.pins.rpigpio",
        "RPiGPIOFactory",
        "the RPi.GPIO library (apt install python3-rpi.gpio)",
    ),
    "pigpio": (
        "gpiozero.pins.pigpio",
        "PiGPIOFactory",
        "the pigpio library and a running pigpiod (apt install python3-pigpio pigpiod)",
    ),
    "native": ("gpiozero.pins.native", "NativeFactory", "gpiozero's native pin driver"),
}
FACTORY_NAMES = ("auto", "mock", *_FACTORIES)


class PinFactoryError(Exception):
    """The configured GPIO pin factory is unknown or cannot start."""


def make_pin_factory(
    name: str, *, model_path: Path = DEVICE_TREE_MODEL
) -> tuple[Factory, str | None]:
    """The pin factory called ``name``, and a warning when the choice deserves one.

    ``auto`` is gpiozero's own default on a Raspberry Pi and ``MockFactory``
    anywhere else (with a warning: the devices are then simulated).
    """
    if name == "auto":
        if _is_raspberry_pi(model_path):
            try:
                Device.ensure_pin_factory()
            except Exception as exc:
                raise PinFactoryError(f"pin factory 'auto': no GPIO library works: {exc}") from exc
            return Device.pin_factory, None
        warning = (
            f"not a Raspberry Pi (no 'Raspberry Pi' in {model_path}): using gpiozero's "
            "MockFactory, so the button, motion sensor, chime and LED are simulated"
        )
        return MockFactory(), warning
    if name == "mock":
        return MockFactory(), None
    if name not in _FACTORIES:
        raise PinFactoryError(
            f"unknown pin factory {name!r}: expected one of {', '.join(FACTORY_NAMES)}"
        )
    module_name, class_name, needs = _FACTORIES[name]
    try:
        factory_class = getattr(importlib.import_module(module_name), class_name)
    except ImportError as exc:
        raise PinFactoryError(f"pin factory {name!r} needs {needs}: {exc}") from exc
    try:
        return factory_class(), None
    except Exception as exc:
        raise PinFactoryError(f"pin factory {name!r} could not start: {exc}") from exc


def _is_raspberry_pi(model_path: Path) -> bool:
    try:
        return b"Raspberry Pi" in model_path.read_bytes()
    except OSError:
        return False


def _notify(callback: Callback, name: str) -> None:
    try:
        callback()
    except Exception:
        log.exception("the %s callback failed", name)


class DoorbellButton:
    """The doorbell push button: each press calls ``on_ring``, on gpiozero's thread.

    Presses closer together than ``bounce_time`` are contact bounce and count
    once. The pin library debounces too, but not alike (lgpio waits for a
    stable level, RPi.GPIO and native drop edges, MockFactory not at all), so
    the button applies the same rule on every factory.
    """

    def __init__(
        self,
        pin: Pin,
        on_ring: Callback,
        *,
        pull_up: bool = True,
        bounce_time: float | None = 0.05,
        pin_factory: Factory | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._on_ring = on_ring
        self._bounce_time = bounce_time
        self._clock = clock
        self._lock = threading.Lock()
        self._last_press: float | None = None
        self.device = Button(
            pin,
            pull_up=pull_up,
            bounce_time=bounce_time,
            pin_factory=pin_factory,
        )
        self.device.when_pressed = self._pressed

    def _pressed(self) -> None:
        now = self._clock()
        with self._lock:
            last, bounce = self._last_press, self._bounce_time
            if last is not None and bounce is not None and now - last < bounce:
                return
            self._last_press = now
        _notify(self._on_ring, "on_ring")

    def close(self) -> None:
        self.device.close()


class MotionDetector:
    """A PIR motion sensor: each start of motion calls ``on_motion``, on gpiozero's thread."""

    def __init__(
        self,
        pin: Pin,
        on_motion: Callback,
        *,
        queue_len: int = 1,
        sample_rate: float = 10.0,
        threshold: float = 0.5,
        pin_factory: Factory | None = None,
    ) -> None:
        self._on_motion = on_motion
        self.device = MotionSensor(
            pin,
            queue_len=queue_len,
            sample_rate=sample_rate,
            threshold=threshold,
            pin_factory=pin_factory,
        )
        self.device.when_motion = self._motion

    def _motion(self) -> None:
        _notify(self._on_motion, "on_motion")

    def close(self) -> None:
        self.device.close()


class Chime:
    """The chime relay: ``ring()`` closes it for ``pulse_seconds`` and returns at once."""

    def __init__(
        self,
        pin: Pin,
        *,
        active_high: bool = True,
        pulse_seconds: float = 0.5,
        pin_factory: Factory | None = None,
    ) -> None:
        self.pulse_seconds = pulse_seconds
        # ring() may come from the button's callback thread and the daemon at once.
        self._lock = threading.Lock()
        # DigitalOutputDevice, not OutputDevice: only it has blink().
        self.device = DigitalOutputDevice(
            pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
        )

    def ring(self) -> None:
        with self._lock:
            self.device.blink(on_time=self.pulse_seconds, off_time=0, n=1, background=True)

    def close(self) -> None:
        self.device.close()


class StatusLed:
    """The status LED: steady when ready, blinking while a clip records."""

    def __init__(
        self,
        pin: Pin,
        *,
        active_high: bool = True,
        blink_seconds: float = 0.25,
        pin_factory: Factory | None = None,
    ) -> None:
        self.blink_seconds = blink_seconds
        self.device = LED(
            pin, active_high=active_high, initial_value=False, pin_factory=pin_factory
        )

    def ready(self) -> None:
        self.device.on()

    def recording(self, on: bool) -> None:
        if on:
            self.device.blink(on_time=self.blink_seconds, off_time=self.blink_seconds)
        else:
            self.ready()

    def close(self) -> None:
        self.device.close()


class Sensors:
    """Every configured GPIO device; a pin of None leaves that device out."""

    def __init__(
        self,
        *,
        button_pin: Pin,
        on_ring: Callback,
        on_motion: Callback,
        pull_up: bool = True,
        bounce_time: float | None = 0.05,
        motion_pin: Pin | None = None,
        motion_queue_len: int = 1,
        motion_sample_rate: float = 10.0,
        motion_threshold: float = 0.5,
        chime_pin: Pin | None = None,
        chime_active_high: bool = True,
        chime_pulse_seconds: float = 0.5,
        led_pin: Pin | None = None,
        led_active_high: bool = True,
        pin_factory: Factory | None = None,
    ) -> None:
        with ExitStack() as stack:
            self.button = DoorbellButton(
                button_pin,
                on_ring,
                pull_up=pull_up,
                bounce_time=bounce_time,
                pin_factory=pin_factory,
            )
            stack.callback(self.button.close)
            self.motion: MotionDetector | None = None
            if motion_pin is not None:
                self.motion = MotionDetector(
                    motion_pin,
                    on_motion,
                    queue_len=motion_queue_len,
                    sample_rate=motion_sample_rate,
                    threshold=motion_threshold,
                    pin_factory=pin_factory,
                )
                stack.callback(self.motion.close)
            self.chime: Chime | None = None
            if chime_pin is not None:
                self.chime = Chime(
                    chime_pin,
                    active_high=chime_active_high,
                    pulse_seconds=chime_pulse_seconds,
                    pin_factory=pin_factory,
                )
                stack.callback(self.chime.close)
            self.led: StatusLed | None = None
            if led_pin is not None:
                self.led = StatusLed(led_pin, active_high=led_active_high, pin_factory=pin_factory)
                stack.callback(self.led.close)
            # Built completely: from now on close() releases the pins.
            self._devices = stack.pop_all()

    def close(self) -> None:
        self._devices.close()

    def __enter__(self) -> Sensors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
