"""Entry point of an embedded-runner worker process: `python -m smallpond.runners.worker FD`."""

from __future__ import annotations

import ctypes
import pickle
import signal
import sys
from multiprocessing.connection import Connection

import cloudpickle

from smallpond.errors import TaskError

__all__ = ["serve"]


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: a killed driver leaves no orphans
    except OSError:  # not Linux: EOF on the socket still ends an idle worker
        pass


def serve(conn: Connection) -> None:
    """Receive a task, execute it, send back its output or its error; until EOF."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what Ctrl-C cancels
    from smallpond.runners.execute import execute_task

    while True:
        try:
            message = conn.recv_bytes()
        except (EOFError, OSError):
            return
        task, inputs, settings = pickle.loads(message)
        try:
            reply = (True, execute_task(task, inputs, settings))
        except Exception as error:
            reply = (False, error)
        try:  # cloudpickle: a user's exception class defined in a script goes back whole
            payload = cloudpickle.dumps(reply)
        except Exception:
            payload = pickle.dumps((False, TaskError(f"{task.describe()} failed: {reply[1]!r}",
                                                     stage=task.stage, partition=task.partition)))
        conn.send_bytes(payload)


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
