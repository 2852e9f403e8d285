"""The uploader: one thread per sink draining the spool into it, oldest first, with backoff.

Each sink has its own uploader and its own queue in the spool, so a slow or broken sink
holds back nothing but itself. An object leaves the sink's queue only after the sink
confirmed it; a failed delivery is retried (the same object, so the order stays strictly
by seq) after an exponential backoff with full jitter.

Each attempt claims the object in the spool first. While the sink is storing it, it cannot
be evicted; if it was evicted while the retry waited, it is not sent: its ``discarded``
notice and the object itself must never both reach the phones.
"""

from __future__ import annotations

import logging
import random as random_module
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from doorbell.transport.sink import Sink, SinkUnavailable
from doorbell.transport.spool import Spool, SpooledObject

log = logging.getLogger(__name__)

# After the first failure, every LOG_EVERY-th in a row is logged: a sink that is down for
# a day must not flood the journal, but must stay visible in it.
LOG_EVERY = 10


@dataclass(frozen=True)
class UploaderStatus:
    """One uploader at a glance, for the daemon's status."""

    sink: str
    running: bool
    delivered: int
    skipped: int
    failures: int  # consecutive; 0 while the sink takes objects
    last_error: str | None  # the most recent failure, kept after recovery
    next_retry: float | None  # seconds until the next attempt, while backing off
    failing_since: float | None  # UNIX time of the first of the current failures
    last_delivered: float | None  # UNIX time the sink last took an object
    pending: int  # objects the sink still has to take
    pending_bytes: int


class Uploader:
    """Delivers what ``spool`` holds for ``sink``, in seq order, on its own thread.

    ``sleep_event`` is what backoff waits on (and what ``stop`` sets); ``clock`` and
    ``random`` are injectable so tests see the exact delays without sleeping;
    ``wall_clock`` gives the times a human reads in the status.
    """

    def __init__(
        self,
        spool: Spool,
        sink: Sink,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        random: Callable[[], float] = random_module.random,
        sleep_event: threading.Event | None = None,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
    ) -> None:
        if not 0 < base_delay <= max_delay:
            raise ValueError(f"need 0 < base_delay <= max_delay, got {base_delay}, {max_delay}")
        self.spool = spool
        self.sink = sink
        self._clock = clock
        self._wall_clock = wall_clock
        self._random = random
        self._stopping = threading.Event()
        self._wake = sleep_event if sleep_event is not None else threading.Event()
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._thread: threading.Thread | None = None
        self._state = threading.Lock()
        self._delivered = 0
        self._skipped = 0
        self._failures = 0
        self._last_error: str | None = None
        self._retry_at: float | None = None
        self._failing_since: float | None = None
        self._last_delivered: float | None = None

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError(f"the uploader for sink {self.sink.name!r} was already started")
        self._thread = threading.Thread(
            target=self._run, name=f"uploader-{self.sink.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Finish the object in flight, then end the thread. True when it has ended."""
        self._stopping.set()
        self._wake.set()
        self.spool.interrupt(self.sink.name)
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def retry_now(self) -> None:
        """The sink can take objects again (it reconnected): cut a backoff wait short."""
        self._wake.set()

    def status(self) -> UploaderStatus:
        pending, pending_bytes = self.spool.backlog(self.sink.name)
        with self._state:
            now = self._clock()
            return UploaderStatus(
                sink=self.sink.name,
                running=self._thread is not None and self._thread.is_alive(),
                delivered=self._delivered,
                skipped=self._skipped,
                failures=self._failures,
                last_error=self._last_error,
                next_retry=None if self._retry_at is None else max(0.0, self._retry_at - now),
                failing_since=self._failing_since,
                last_delivered=self._last_delivered,
                pending=pending,
                pending_bytes=pending_bytes,
            )

    def backoff_delay(self, failures: int) -> float:
        """Full jitter: uniform in [0, min(max_delay, base_delay * 2**(failures - 1)))."""
        # The exponent is capped only so the float cannot overflow; max_delay caps long before.
        ceiling = self._base_delay * 2.0 ** min(failures - 1, 64)
        return self._random() * min(self._max_delay, ceiling)

    def _run(self) -> None:
        name = self.sink.name
        while not self._stopping.is_set():
            try:
                oldest = self.spool.pending(name, limit=1)
                if not oldest:
                    if not self.spool.wait(name) and self.spool.closed:
                        return
                    continue
                self._deliver(oldest[0])
            except Exception as exc:
                # A spool or disk error: the thread must outlive it, so it is a failure too.
                log.exception("uploader %s: unexpected error", name)
                self.spool.release(name)
                self._back_off(exc)

    def _deliver(self, obj: SpooledObject) -> None:
        """Deliver ``obj``: retried until the sink takes it, it is gone, or we stop."""
        name = self.sink.name
        while True:
            if not self.spool.claim(name, obj):
                # Evicted while waiting for a retry: a notice announces it as discarded,
                # so it must not reach the sink now.
                log.warning("uploader %s: %s was evicted before it was sent", name, obj.name)
                with self._state:
                    self._skipped += 1
                return
            try:
                data = obj.read()
            except FileNotFoundError:
                # Removed by hand: it cannot be sent, and must leave the queue or it would
                # be retried for ever.
                log.warning("uploader %s: %s is no longer in the spool; skipped", name, obj.name)
                self.spool.done(name, obj)
                with self._state:
                    self._skipped += 1
                return
            try:
                self.sink.deliver(obj.name, data, obj.kind)
            except (SinkUnavailable, OSError) as exc:
                error: Exception = exc
            except Exception as exc:
                log.exception("uploader %s: the sink failed on %s", name, obj.name)
                error = exc
            else:
                self.spool.done(name, obj)
                self._delivered_one()
                return
            self.spool.release(name)
            del data
            if self._back_off(error, obj):
                return

    def _delivered_one(self) -> None:
        with self._state:
            failures, self._failures = self._failures, 0
            self._failing_since = None
            self._last_delivered = self._wall_clock()
            self._delivered += 1
        if failures:
            log.info("uploader %s: delivering again after %d failure(s)", self.sink.name, failures)

    def _back_off(self, error: Exception, obj: SpooledObject | None = None) -> bool:
        """Wait before the next attempt. True when the uploader is stopping."""
        with self._state:
            self._failures += 1
            failures = self._failures
            if failures == 1:
                self._failing_since = self._wall_clock()
            self._last_error = f"{type(error).__name__}: {error}"
            delay = self.backoff_delay(failures)
            self._retry_at = self._clock() + delay
        if failures == 1 or failures % LOG_EVERY == 0:
            log.warning(
                "uploader %s: %s not delivered (%s); %d failure(s) in a row, next try in %.1f s",
                self.sink.name,
                "object" if obj is None else obj.name,
                error,
                failures,
                delay,
            )
        self._wake.wait(delay)
        with self._state:
            self._retry_at = None
        if self._stopping.is_set():
            return True
        self._wake.clear()
        return False
