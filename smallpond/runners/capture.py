"""What a task printed and logged, and what it cost, captured around its kernel call.

Output is captured at the file-descriptor level (fds 1 and 2 point at a private temporary file
while the kernel runs, and sys.stdout / sys.stderr write straight to them), so prints, C
libraries and child processes are all caught, in the order they wrote. Python logging records
of INFO and above go to the same place, unless a handler of the worker already writes them to
stdout or stderr. A worker runs one task at a time, so redirecting its process-wide descriptors
is safe. The text is capped (head and tail kept) so a chatty function cannot flood
the driver.
"""

from __future__ import annotations

import io
import logging
import os
import re
import socket
import sys
import tempfile
import time

__all__ = ["TaskCapture", "attach_output", "peak_rss", "reset_peak_rss", "worker_id",
           "OUTPUT_LIMIT"]

OUTPUT_LIMIT = 64 << 10  # bytes of captured text kept per task
_HEAD = 16 << 10  # of which from the start; the rest is the tail
_ERROR_TAIL = 4 << 10  # bytes of output quoted in a failed task's error message
_HWM = re.compile(rb"VmHWM:\s+(\d+)\s+kB")


def worker_id() -> str:
    """`host:pid` of this process: the same on both runners."""
    return f"{socket.gethostname()}:{os.getpid()}"


def reset_peak_rss() -> None:
    """Reset the peak resident set size of this process to its current size (Linux >= 4.0)."""
    try:
        fd = os.open("/proc/self/clear_refs", os.O_WRONLY)
        try:
            os.write(fd, b"5")
        finally:
            os.close(fd)
    except OSError:  # not Linux, or not allowed: peak_rss falls back to the lifetime peak
        pass


def peak_rss() -> int:
    """Peak resident bytes of this process since the last reset (or since it started)."""
    try:
        fd = os.open("/proc/self/status", os.O_RDONLY)
        try:
            match = _HWM.search(os.read(fd, 1 << 16))
        finally:
            os.close(fd)
        if match:
            return int(match.group(1)) << 10
    except OSError:
        pass
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10
    except Exception:  # pragma: no cover - no resource module (Windows)
        return 0


def _fd_writer(fd: int) -> io.TextIOWrapper:
    raw = io.FileIO(fd, "wb", closefd=False)
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", write_through=True)


def _writes_to_std(handler: logging.Handler) -> bool:
    stream = getattr(handler, "stream", None)
    try:
        return stream is not None and stream.fileno() in (1, 2)
    except Exception:  # a stream without a descriptor (StringIO, pytest's capture)
        return False


class _FdHandler(logging.Handler):
    """Writes log records to file descriptor 2, after what was printed before them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record) + "\n"
            _flush()
            os.write(2, message.encode("utf-8", "replace"))
        except Exception:  # a broken record must not fail the task
            self.handleError(record)


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or replaced stream: nothing buffered to lose
            pass


_scratch = None  # one temporary file per process, emptied for each task
_scratch_pid = 0  # a forked child must not share its parent's file (and its offset)


def _scratch_fd() -> int:
    global _scratch, _scratch_pid
    if _scratch is None or _scratch_pid != os.getpid():
        _scratch = tempfile.TemporaryFile()
        _scratch_pid = os.getpid()
    fd = _scratch.fileno()
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _clip(head: bytes, omitted: int, tail: bytes) -> str:
    middle = f"\n[... {omitted} bytes omitted ...]\n".encode()
    return (head + middle + tail).decode("utf-8", "replace")


class TaskCapture:
    """Context manager around a kernel call: output text, worker, wall times, peak memory."""

    def __init__(self) -> None:
        self.text = ""
        self.worker = worker_id()
        self.started = 0.0
        self.ended = 0.0
        self.peak_rss = 0
        self._fd: int | None = None
        self._saved: list[int] = []
        self._handler: logging.Handler | None = None
        self._level: int | None = None
        self._streams: tuple | None = None

    def __enter__(self) -> TaskCapture:
        reset_peak_rss()
        _flush()
        try:
            self._fd = _scratch_fd()
            self._saved = [os.dup(1), os.dup(2)]
            os.dup2(self._fd, 1)
            os.dup2(self._fd, 2)
            self._streams = (sys.stdout, sys.stderr)
            sys.stdout, sys.stderr = _fd_writer(1), _fd_writer(2)
        except OSError:  # no descriptors 1/2 to redirect, or no temporary file: run uncaptured
            self._restore_fds()
            self._fd = None
        root = logging.getLogger()
        if not any(_writes_to_std(h) for h in root.handlers):
            self._handler = _FdHandler(logging.INFO)
            self._handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            root.addHandler(self._handler)
            if root.level > logging.INFO:
                self._level = root.level
                root.setLevel(logging.INFO)
        self.started = time.time()
        return self

    def __exit__(self, *exc) -> None:
        self.ended = time.time()
        self.peak_rss = peak_rss()
        _flush()
        if self._streams is not None:
            sys.stdout, sys.stderr = self._streams
            self._streams = None
        self._restore_fds()
        root = logging.getLogger()
        if self._handler is not None:
            root.removeHandler(self._handler)
            self._handler = None
        if self._level is not None:
            root.setLevel(self._level)
            self._level = None
        if self._fd is not None:
            size = os.fstat(self._fd).st_size
            if size > OUTPUT_LIMIT:
                tail = OUTPUT_LIMIT - _HEAD
                self.text = _clip(os.pread(self._fd, _HEAD, 0), size - OUTPUT_LIMIT,
                                  os.pread(self._fd, tail, size - tail))
            elif size:
                self.text = os.pread(self._fd, size, 0).decode("utf-8", "replace")
            os.ftruncate(self._fd, 0)
            self._fd = None

    def _restore_fds(self) -> None:
        for fd, saved in zip((1, 2), self._saved):
            os.dup2(saved, fd)
            os.close(saved)
        self._saved = []

    def fields(self) -> dict:
        """The TaskOutput fields this capture fills."""
        return {"worker": self.worker, "started": self.started, "ended": self.ended,
                "peak_rss": self.peak_rss, "logs": self.text}


def attach_output(error: BaseException, text: str) -> BaseException:
    """Make a failed task's captured output part of its error: `error.output` holds it all,
    the message quotes its tail."""
    if not text:
        return error
    try:
        error.output = text
    except AttributeError:  # an exception type with __slots__: keep it as it is
        return error
    tail = text[-_ERROR_TAIL:]
    if len(tail) < len(text):
        tail = "[...]\n" + tail.split("\n", 1)[-1]
    quoted = f"\n\nOutput of the task (stdout, stderr, logging):\n{tail.rstrip()}"
    if error.args and isinstance(error.args[0], str):
        error.args = (error.args[0] + quoted, *error.args[1:])
    else:
        error.args = (*error.args, quoted)
    return error
