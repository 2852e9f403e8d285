"""What the PyAV sources share: wall-clock pacing, stopping from any thread, snapshots."""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterator

from av.video.frame import VideoFrame

from doorbell.capture.snapshot import GopSnapshot, LatestPicture
from doorbell.capture.source import AccessUnit, StreamFormat


class PacedSource(ABC):
    """A source whose units come from a generator as fast as PyAV makes them.

    `realtime=True` releases each unit at its due time on `clock`, waited for with
    `sleep`: the first at once, each later one as far after it as its pts says, so
    a slow consumer catches up instead of drifting. `close()` may come from another
    thread than the one iterating `frames()`: the run then ends at its next unit.

    A snapshot pictures the last unit handed out, at about the cost of one JPEG:
    from the picture it was encoded from when the source encodes (`LatestPicture`),
    else decoded from the stream as it passes (`GopSnapshot`). None before the first
    picture and after `close()`, as with the Pi camera.
    """

    def __init__(
        self, *, realtime: bool, clock: Callable[[], float], sleep: Callable[[float], None]
    ) -> None:
        self._realtime = realtime
        self._clock = clock
        self._sleep = sleep
        self._pictures = LatestPicture()
        self._gop = GopSnapshot()
        self._running: Generator[AccessUnit, None, None] | None = None
        self._stop = threading.Event()

    @property
    @abstractmethod
    def format(self) -> StreamFormat: ...

    @abstractmethod
    def _units(self) -> Generator[tuple[AccessUnit, VideoFrame | None], None, None]:
        """The stream from its start, unpaced; closed when the run ends.

        Each unit comes with the picture it was just encoded from, or None when the
        source passes encoded video through; the picture is never written to again.
        """

    def frames(self) -> Iterator[AccessUnit]:
        """Start the stream from its beginning; a previous run of this source is stopped."""
        self.close()
        self._stop = threading.Event()
        # Fresh ones for each run: a run still ending on the capture thread feeds its own.
        self._pictures, self._gop = LatestPicture(), GopSnapshot()
        self._running = self._run(self._stop, self._pictures, self._gop)
        return self._running

    def snapshot(self, max_width: int = 640) -> bytes | None:
        pictures, gop = self._pictures, self._gop
        jpeg = pictures.take(max_width)
        return jpeg if jpeg is not None else gop.take(max_width)

    def close(self) -> None:
        self._stop.set()
        self._pictures.close()
        self._gop.close()
        running, self._running = self._running, None
        if running is not None:
            # ValueError: it is executing on the capture thread, which sees the stop at
            # its next unit and releases its decoder there.
            with contextlib.suppress(ValueError):
                running.close()

    def _run(
        self, stop: threading.Event, pictures: LatestPicture, gop: GopSnapshot
    ) -> Generator[AccessUnit, None, None]:
        units = self._units()
        epoch: float | None = None
        try:
            for unit, picture in units:
                if self._realtime:
                    time = unit.pts * unit.time_base
                    if epoch is None:
                        epoch = self._clock() - float(time)
                    self._wait_until(epoch + float(time))
                if stop.is_set():
                    return
                if picture is None:
                    gop.feed(unit)
                else:
                    pictures.show(picture)
                yield unit
                if stop.is_set():
                    return
        finally:
            units.close()

    def _wait_until(self, due: float) -> None:
        delay = due - self._clock()
        if delay > 0:
            self._sleep(delay)
