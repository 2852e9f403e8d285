"""The GPIO devices, on gpiozero's own MockFactory pins driven as a wire would drive them."""

from __future__ import annotations

import importlib.util
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from gpiozero import Device, GPIOPinInUse, InputDevice
from gpiozero.pins.mock import MockFactory, MockPin

from doorbell.events import ClipStarted, EventInClip, Recorder, RecorderRules
from doorbell.events.sensors import (
    Chime,
    DoorbellButton,
    MotionDetector,
    PinFactoryError,
    Sensors,
    StatusLed,
    make_pin_factory,
)

TIMEOUT = 2.0
BUTTON, MOTION, CHIME, LED = 17, 27, 22, 23


# A Button closed while pressed waits out its hold time (gpiozero's hold thread):
# tests release every press they make.


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    factory = MockFactory()
    yield factory
    factory.reset()


class Calls:
    """A callback that counts its calls and lets a test wait for the n-th one."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self.times: list[float] = []
        self.threads: list[threading.Thread] = []

    def __call__(self) -> None:
        with self._condition:
            self.times.append(time.monotonic())
            self.threads.append(threading.current_thread())
            self._condition.notify_all()

    @property
    def count(self) -> int:
        with self._condition:
            return len(self.times)

    def wait_for(self, count: int, timeout: float = TIMEOUT) -> bool:
        with self._condition:
            return self._condition.wait_for(lambda: len(self.times) >= count, timeout)


def _poll(condition: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    """Poll ``condition`` until it holds or the deadline passes (for state with no event)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def _states(pin: MockPin) -> list[bool]:
    return [bool(state.state) for state in pin.states]


def _motion_settled(detector: MotionDetector) -> None:
    # gpiozero's first sample only sets the initial state and fires nothing;
    # motion must come after it to be an edge.
    assert detector.device.wait_for_inactive(TIMEOUT)


def test_pressing_the_button_rings(factory: MockFactory) -> None:
    rings = Calls()
    with closing(DoorbellButton(BUTTON, rings, pin_factory=factory)) as button:
        pin = button.device.pin
        assert pin.state, "pulled up: the idle line reads high"
        pin.drive_low()
        assert rings.wait_for(1)
        pin.drive_high()
        assert rings.count == 1, "releasing the button is not a ring"


def test_contact_bounce_rings_once(factory: MockFactory) -> None:
    now = [50.0]
    rings = Calls()
    button = DoorbellButton(
        BUTTON, rings, bounce_time=0.05, pin_factory=factory, clock=lambda: now[0]
    )
    with closing(button):
        pin = button.device.pin
        pin.drive_low()
        now[0] += 0.01
        pin.drive_high()
        now[0] += 0.01
        pin.drive_low()
        assert rings.wait_for(1)
        assert not rings.wait_for(2, timeout=0.05)
        now[0] += 0.049  # 0.049 s after the last bounce, 0.069 s after the ring
        pin.drive_high()
        pin.drive_low()
        assert rings.wait_for(2), "a press after the bounce window is a new ring"


def test_bounce_window_on_the_real_clock(factory: MockFactory) -> None:
    rings = Calls()
    with closing(DoorbellButton(BUTTON, rings, bounce_time=0.05, pin_factory=factory)) as button:
        pin = button.device.pin

        def press() -> bool:
            pin.drive_high()
            pin.drive_low()
            return rings.count >= 2

        pin.drive_low()
        assert rings.wait_for(1)
        assert _poll(press), "pressing again never rang"
        # Less a margin for the moments between the button's clock and ours.
        assert rings.times[1] - rings.times[0] >= 0.045


def test_motion_calls_on_motion_on_gpiozeros_thread(factory: MockFactory) -> None:
    motions = Calls()
    with closing(MotionDetector(MOTION, motions, sample_rate=200, pin_factory=factory)) as pir:
        _motion_settled(pir)
        assert motions.count == 0
        pir.device.pin.drive_high()
        assert motions.wait_for(1)
        assert motions.threads[0] is not threading.current_thread()


def test_a_failing_callback_does_not_stop_motion_sampling(
    factory: MockFactory, caplog: pytest.LogCaptureFixture
) -> None:
    motions = Calls()

    def on_motion() -> None:
        motions()
        if motions.count == 1:
            raise RuntimeError("queue is full")

    with closing(MotionDetector(MOTION, on_motion, sample_rate=200, pin_factory=factory)) as pir:
        _motion_settled(pir)
        with caplog.at_level(logging.ERROR, logger="doorbell.events.sensors"):
            pir.device.pin.drive_high()
            assert motions.wait_for(1)
            pir.device.pin.drive_low()
            assert pir.device.wait_for_inactive(TIMEOUT)
            pir.device.pin.drive_high()
            assert motions.wait_for(2), "gpiozero's sampling thread died with the callback"
        assert "the on_motion callback failed" in caplog.text


@pytest.mark.parametrize("active_high", [True, False])
def test_chime_pulses_without_blocking(factory: MockFactory, active_high: bool) -> None:
    pulse = 0.3
    chime = Chime(CHIME, active_high=active_high, pulse_seconds=pulse, pin_factory=factory)
    with closing(chime):
        pin = chime.device.pin
        off = not active_high
        assert pin.state == off
        pin.clear_states()
        chime.ring()
        assert len(pin.states) < 3, "ring() waited for the pulse to end"
        expected = [off, active_high, off]
        assert _poll(lambda: _states(pin) == expected), _states(pin)
        assert pin.states[2].timestamp >= pulse * 0.9, "the relay opened too early"


def test_status_led(factory: MockFactory) -> None:
    with closing(StatusLed(LED, blink_seconds=0.01, pin_factory=factory)) as led:
        pin = led.device.pin
        assert not pin.state
        led.ready()
        assert pin.state
        pin.clear_states()
        led.recording(True)
        assert _poll(lambda: len(pin.states) >= 3), "the LED never blinked"
        assert _states(pin)[:3] == [True, False, True]
        led.recording(False)
        assert pin.state


def test_auto_off_a_pi_uses_the_mock_factory_with_a_warning(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Rockchip RK3588\x00")
    for path in (tmp_path / "absent", model):
        pin_factory, warning = make_pin_factory("auto", model_path=path)
        assert isinstance(pin_factory, MockFactory)
        assert warning is not None
        assert "not a Raspberry Pi" in warning
        assert "MockFactory" in warning


def test_auto_on_a_pi_defers_to_gpiozero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "model"
    model.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\x00")
    # gpiozero's own default choice, steered to its mock by its own variable.
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "mock")
    monkeypatch.setattr(Device, "pin_factory", None)
    pin_factory, warning = make_pin_factory("auto", model_path=model)
    assert warning is None
    assert isinstance(pin_factory, MockFactory)
    assert pin_factory is Device.pin_factory


def test_mock_by_name() -> None:
    pin_factory, warning = make_pin_factory("mock")
    assert isinstance(pin_factory, MockFactory)
    assert warning is None


def test_unknown_factory_is_refused() -> None:
    with pytest.raises(PinFactoryError, match="unknown pin factory 'gpiod': expected one of auto"):
        make_pin_factory("gpiod")


@pytest.mark.skipif(importlib.util.find_spec("lgpio") is not None, reason="lgpio is installed")
def test_missing_library_names_the_factory() -> None:
    with pytest.raises(PinFactoryError, match="pin factory 'lgpio' needs the lgpio library"):
        make_pin_factory("lgpio")


def test_sensors_builds_the_configured_devices_and_releases_them(factory: MockFactory) -> None:
    rings, motions = Calls(), Calls()
    sensors = Sensors(
        button_pin=BUTTON,
        on_ring=rings,
        on_motion=motions,
        motion_pin=MOTION,
        motion_sample_rate=200,
        chime_pin=CHIME,
        led_pin=LED,
        pin_factory=factory,
    )
    with sensors:
        assert sensors.motion is not None
        assert sensors.chime is not None
        assert sensors.led is not None
        sensors.button.device.pin.drive_low()
        assert rings.wait_for(1)
        sensors.button.device.pin.drive_high()
        _motion_settled(sensors.motion)
        sensors.motion.device.pin.drive_high()
        assert motions.wait_for(1)
    for pin in (BUTTON, MOTION, CHIME, LED):
        InputDevice(pin, pin_factory=factory).close()  # GPIOPinInUse if still held


def test_sensors_without_optional_devices(factory: MockFactory) -> None:
    with Sensors(button_pin=BUTTON, on_ring=Calls(), on_motion=Calls(), pin_factory=factory) as s:
        assert (s.motion, s.chime, s.led) == (None, None, None)


def test_a_failed_build_releases_the_pins_it_took(factory: MockFactory) -> None:
    with pytest.raises(GPIOPinInUse):
        Sensors(
            button_pin=BUTTON,
            on_ring=Calls(),
            on_motion=Calls(),
            motion_pin=MOTION,
            chime_pin=BUTTON,
            pin_factory=factory,
        )
    for pin in (BUTTON, MOTION):
        InputDevice(pin, pin_factory=factory).close()


def test_button_and_motion_reach_the_recorder_through_a_queue(factory: MockFactory) -> None:
    """As the daemon wires it: callbacks only enqueue; one thread owns the recorder."""
    triggers: queue.Queue[str] = queue.Queue()
    recorder = Recorder(RecorderRules())
    sensors = Sensors(
        button_pin=BUTTON,
        on_ring=lambda: triggers.put("ring"),
        on_motion=lambda: triggers.put("motion"),
        motion_pin=MOTION,
        motion_sample_rate=200,
        pin_factory=factory,
    )
    with sensors:
        assert sensors.motion is not None
        _motion_settled(sensors.motion)
        sensors.button.device.pin.drive_low()
        [started] = recorder.trigger(triggers.get(timeout=TIMEOUT))  # type: ignore[arg-type]
        sensors.button.device.pin.drive_high()
        assert isinstance(started, ClipStarted)
        assert started.trigger == "ring"
        sensors.motion.device.pin.drive_high()
        actions = recorder.trigger(triggers.get(timeout=TIMEOUT))  # type: ignore[arg-type]
        assert actions == [EventInClip(started.clip_id, "motion")]
        assert recorder.clip_type == "ring"
