"""The loop of an embedded-runner worker: a fork of the fork server (see forkserver.py).

Protocol on the worker's socket (pickled tuples): the worker first sends ("hello", pid, time
it was ready); then
the driver sends ("task", task, inputs, settings), answered by (ok, output or error),
("preload", names) or ("storage", storage options by URL root), answered by nothing. EOF
ends the worker.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import time
from multiprocessing.connection import Connection

import cloudpickle

from smallpond.errors import TaskError

__all__ = ["serve"]


def serve(conn: Connection) -> None:
    """Say hello, then run tasks and send back their output or error; until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what Ctrl-C cancels
    from smallpond.io.files import install_storage
    from smallpond.runners.execute import execute_task
    from smallpond.runners.forkserver import preload

    try:
        conn.send_bytes(pickle.dumps(("hello", os.getpid(), time.time())))
    except OSError:  # the driver is gone (or gave up on this worker)
        return
    while True:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if message[0] == "preload":
            preload(message[1])
            continue
        if message[0] == "storage":
            install_storage(message[1])
            continue
        _, task, inputs, settings = message
        try:
            reply = (True, execute_task(task, inputs, settings))
        except Exception as error:
            reply = (False, error)
        try:  # cloudpickle: a user's exception class defined in a script goes back whole
            payload = cloudpickle.dumps(reply)
        except Exception:
            payload = pickle.dumps((False, TaskError(f"{task.describe()} failed: {reply[1]!r}",
                                                     stage=task.stage, partition=task.partition)))
        try:
            conn.send_bytes(payload)
        except OSError:
            return


if __name__ == "__main__":  # a worker as a fresh interpreter (without the fork server)
    from smallpond.runners.forkserver import die_with_parent

    die_with_parent(os.getppid())
    serve(Connection(int(sys.argv[1])))
