"""Test instrumentation, loaded only by the power-cut test: remembers what was fsynced.

With DOORBELL_TEST_FSYNC_SHADOW set, every ``os.fsync``/``os.fdatasync`` of a regular
file also copies the file's content, by inode, into that directory, so the test can
put every file back to what a power cut would have left: the content of its last
fsync. Nothing else of the process is changed. The files copied are the daemon's
state and spool (ciphertext, keys of the test device, counters), never plaintext
video, which the daemon never writes to a file in the first place.
"""

import os
import stat

_SHADOW = os.environ.get("DOORBELL_TEST_FSYNC_SHADOW")

if _SHADOW:
    _real_fsync = os.fsync
    _real_fdatasync = os.fdatasync

    def _remember(fd: object) -> None:
        number = fd if isinstance(fd, int) else fd.fileno()  # type: ignore[attr-defined]
        info = os.fstat(number)
        if not stat.S_ISREG(info.st_mode):
            return
        # Through /proc: the descriptor may be open for writing only.
        with open(f"/proc/self/fd/{number}", "rb") as source:
            content = source.read()
        tmp = os.path.join(_SHADOW, f".{info.st_ino}.{os.getpid()}.tmp")
        with open(tmp, "wb") as out:
            out.write(content)
        os.replace(tmp, os.path.join(_SHADOW, str(info.st_ino)))

    def _fsync(fd: object) -> None:
        _real_fsync(fd)  # type: ignore[arg-type]
        _remember(fd)

    def _fdatasync(fd: object) -> None:
        _real_fdatasync(fd)  # type: ignore[arg-type]
        _remember(fd)

    os.fsync = _fsync
    os.fdatasync = _fdatasync
