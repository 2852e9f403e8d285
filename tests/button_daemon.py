"""The real daemon (``doorbell run -c CONFIG``) with a hand on its button: each line
written to the FIFO ``PRESSES`` presses and releases the button through gpiozero's own
MockFactory, the one the daemon made for ``gpio.pin_factory: mock``.

    python tests/button_daemon.py CONFIG PRESSES
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

from gpiozero.pins.mock import MockFactory

import doorbell.events.sensors as sensors
from doorbell.cli import main
from doorbell.config import load_settings

made: list[MockFactory] = []


class WatchedFactory(MockFactory):
    """gpiozero's MockFactory, remembered so that this harness can reach its pins."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        made.append(self)


def press(fifo: str, pin_number: int) -> None:
    with open(fifo) as presses:
        for _ in presses:
            pin = made[-1].pin(pin_number)
            pin.drive_low()
            pin.drive_high()


if __name__ == "__main__":
    config, fifo = sys.argv[1], sys.argv[2]
    sensors.MockFactory = WatchedFactory  # type: ignore[misc]
    button = load_settings(Path(config)).gpio.button.pin
    threading.Thread(target=press, args=(fifo, button), daemon=True).start()
    sys.exit(main(["run", "-c", config]))
