"""A fork server for the embedded runner's workers.

One process (`python -m smallpond.runners.forkserver FD`, never multiprocessing's spawn, so a
user's `__main__` script is not re-imported) imports the heavy modules once: numpy, pyarrow,
duckdb and the kernels. Each new worker is a fork of it, ready in milliseconds instead of an
interpreter start plus half a second of imports.

The server never opens a DuckDB connection and starts no thread before it forks: forking a
process in which DuckDB threads run can deadlock. (pyarrow's jemalloc starts one background
thread when the library loads; jemalloc's own fork handlers take its locks around fork(), and
OpenBLAS gets OPENBLAS_NUM_THREADS=1 unless the user set it, so numpy starts no thread.)

Lifetime: the server dies with the driver (parent-death signal, and EOF on its control socket);
workers die with the server (parent-death signal) and with the driver (EOF on their own
socket). The server reaps dead workers and sends each one's exit status to the driver, which
says how a lost worker ended.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from multiprocessing.connection import Connection

__all__ = ["ForkServer", "BASE_PRELOAD"]

# what every worker needs: imported once here, shared copy-on-write by the forks
BASE_PRELOAD = (
    "numpy", "pyarrow", "pyarrow.parquet", "duckdb", "cloudpickle",
    "smallpond.runners.execute", "smallpond.kernels:load_builtin_kernels",
)
_MAX_MESSAGE = 1 << 16


class ForkServer:
    """Driver side: starts the server process and asks it for workers."""

    def __init__(self, preload: Iterable[str] = BASE_PRELOAD):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.started_at = time.time()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.setdefault("OPENBLAS_NUM_THREADS", "1")  # no BLAS thread pool before fork()
        # workers keep what malloc frees (up to 32 MiB blocks, the most it allows) for their
        # next task: fresh memory costs a page fault per page, 1-2 s per GiB on our VMs
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(32 << 20))
        env.setdefault("MALLOC_TRIM_THRESHOLD_", str(1 << 30))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "smallpond.runners.forkserver", str(theirs.fileno()),
             str(os.getpid()), ",".join(preload)],
            pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, close_fds=True, env=env)
        theirs.close()
        self._control = ours
        self._exits: dict[int, int] = {}

    def alive(self) -> bool:
        return self.process.poll() is None

    def exit_code(self, pid: int, timeout: float = 0.0) -> int | None:
        """How worker `pid` ended (as Popen.returncode: -N for signal N), once the server
        reported it; None if it did not within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while pid not in self._exits:
            if not self._read_exit(max(0.0, deadline - time.monotonic())):
                return None
        return self._exits.pop(pid)

    def collect_exits(self) -> None:
        """Take the pending exit reports off the socket (so that it never fills up)."""
        while self._read_exit(0.0):
            pass
        while len(self._exits) > 1000:  # reports nobody asked for: workers we killed
            self._exits.pop(next(iter(self._exits)))

    def _read_exit(self, timeout: float) -> bool:
        try:
            self._control.settimeout(timeout)
            message = self._control.recv(_MAX_MESSAGE)
        except OSError:  # nothing within the timeout, or the server is gone
            return False
        finally:
            try:
                self._control.settimeout(None)
            except OSError:
                pass
        if not message:
            return False
        _, dead, code = message.split()
        self._exits[int(dead)] = int(code)
        return True

    def spawn(self) -> Connection:
        """A connection to a new worker. Returns at once: the worker is forked when the server
        has finished its imports; tasks sent before then wait in the socket."""
        ours, theirs = socket.socketpair()
        try:
            socket.send_fds(self._control, [b"fork"], [theirs.fileno()])
        finally:
            theirs.close()
        return Connection(ours.detach())

    def preload(self, names: Iterable[str]) -> None:
        """Import `module` or call `module:function` in the server before its next forks."""
        self._control.send(b"preload " + ",".join(names).encode())

    def close(self) -> None:
        """Stop the server; its idle workers die with it (parent-death signal)."""
        try:
            self._control.close()
        finally:
            if self.alive():
                self.process.kill()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:  # pragma: no cover - kill -9 does not take this long
                pass


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies; exit now if the parent is already gone."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: EOF on the sockets still ends idle processes
        pass
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)


def preload(names: Iterable[str]) -> None:
    """Import each `module`, or import `module` and call its `function` for `module:function`.

    Best effort: what fails here is imported again by the task that needs it, and that task
    reports the error.
    """
    for name in names:
        if not name:
            continue
        module_name, _, function = name.partition(":")
        try:
            module = importlib.import_module(module_name)
            if function:
                getattr(module, function)()
        except Exception:  # noqa: S110 - see the docstring
            pass


def _receive(control: socket.socket, block: bool) -> list[tuple[bytes, list[int]]] | None:
    """Pending control messages (the first one waited for when `block`); None at EOF."""
    messages = []
    control.setblocking(block)
    try:
        while True:
            message, fds, _, _ = socket.recv_fds(control, _MAX_MESSAGE, 4)
            if not message:
                return None if not messages else messages + [(b"eof", [])]
            messages.append((message, fds))
            control.setblocking(False)
    except (BlockingIOError, InterruptedError):
        return messages
    except OSError:
        return None if not messages else messages + [(b"eof", [])]


def _reap(control: socket.socket) -> None:
    """Collect dead workers and tell the driver how each one ended (SIGCHLD handler)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        try:
            control.send(f"exit {pid} {os.waitstatus_to_exitcode(status)}".encode())
        except OSError:  # the driver is gone
            return


def _fork(control: socket.socket, fd: int, others: list[int]) -> None:
    server = os.getpid()
    pid = os.fork()
    if pid:
        os.close(fd)
        return
    code = 0
    try:  # the child: a worker on `fd`
        control.close()
        for other in others:  # sockets of workers still to fork: theirs alone, or their
            os.close(other)   # death would never show as EOF in the driver
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # tasks may wait for their own children
        _reseed()
        from smallpond.runners.worker import serve

        die_with_parent(server)
        serve(Connection(fd))
    except BaseException:  # pragma: no cover - a worker's own errors go to the driver
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reseed() -> None:
    # numpy's global generator would otherwise continue identically in every fork
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def serve(control: socket.socket, parent_pid: int, base: list[str]) -> None:
    """Import `base`, then fork a worker per request until the driver closes the socket."""
    import warnings

    # Python 3.12+ warns at fork() when any thread exists: here only jemalloc's, which its own
    # fork handlers make safe (module docstring)
    warnings.filterwarnings("ignore", message=".*multi-threaded.*fork", category=DeprecationWarning)
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what Ctrl-C cancels
    signal.signal(signal.SIGCHLD, lambda *_: _reap(control))
    preload(base)
    while True:
        messages = _receive(control, block=True)
        if messages is None:
            return
        # requests that queued up while importing: preloads first, so that every worker
        # forked from here on has what the driver asked for
        for message, _ in messages:
            if message.startswith(b"preload "):
                preload(message[8:].decode().split(","))
        pending = [fd for message, fds in messages if message == b"fork" for fd in fds]
        while pending:
            fd = pending.pop(0)
            _fork(control, fd, pending)
        if any(message == b"eof" for message, _ in messages):
            return


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])), int(sys.argv[2]),
          sys.argv[3].split(",") if len(sys.argv) > 3 else [])
