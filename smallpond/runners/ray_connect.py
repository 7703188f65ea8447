"""Connecting to Ray the way the README says, within a deadline, interruptible.

Where the address comes from, in order: `ray_address` (the argument, SMALLPOND_RAY_ADDRESS,
SP_RAY_ADDRESS), then Ray's own RAY_ADDRESS; without any, a private local Ray is started
(`address="local"`), never a cluster found through Ray's cluster file, which a cluster that
stopped long ago leaves behind. `"auto"` asks for that lookup explicitly: RAY_ADDRESS, the
cluster file `ray start` writes, then a GCS running on this machine.

Ray 2.5x turns token authentication on by itself in two places: `ray.init()` starting a local
cluster (RAY_AUTH_MODE unset: it creates ~/.ray/auth_token), and `ray start --head` when a
token already exists on that machine. A driver connecting with an explicit address never turns
it on, so after any earlier local `ray.init()` on the head, `ray start --head` plus
"HEAD_IP:6379" failed with InvalidAuthToken. So, as Ray does for "auto": with RAY_AUTH_MODE
unset and a token available here (~/.ray/auth_token, RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH), the
driver uses it; a cluster without authentication ignores it.

Nothing waits without a bound: the address is probed first (a refused port fails at once), the
connection runs in a helper thread while this one waits up to `ray_connect_timeout` (default
60 s) and stays responsive to Ctrl-C and SIGTERM. A private local Ray starts in this thread:
Ray ties its processes' lives to the thread that started them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import ray

from smallpond.config import Config
from smallpond.errors import ConfigError

__all__ = ["RayTarget", "choose_address", "connect", "CONNECT_TIMEOUT"]

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 60.0
_PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class RayTarget:
    """The address to pass to ray.init and, for messages, where it came from."""

    address: str
    source: str

    @property
    def is_local(self) -> bool:
        return self.address == "local"

    @property
    def host_port(self) -> tuple[str, int] | None:
        if self.is_local:
            return None
        text = self.address.split("://", 1)[-1].rstrip("/")
        host, _, port = text.rpartition(":")
        try:
            return host.strip("[]") or "127.0.0.1", int(port)
        except ValueError:
            return None


def choose_address(config: Config) -> RayTarget:
    """Where the runner connects: the configured address, RAY_ADDRESS, or a private Ray."""
    if config.ray_address:
        target = RayTarget(config.ray_address, "ray_address")
    elif os.environ.get("RAY_ADDRESS"):
        target = RayTarget(os.environ["RAY_ADDRESS"], "the RAY_ADDRESS environment variable")
    else:
        return RayTarget("local", "default")
    if target.address == "auto":
        return _resolve_auto()
    if target.address != "local" and target.host_port is None:
        raise ConfigError(f"Ray address {target.address!r} ({target.source}) is not "
                          "'local', 'auto', 'HOST:PORT' or 'ray://HOST:PORT'")
    return target


def _resolve_auto() -> RayTarget:
    from ray._common.utils import get_ray_address_file
    from ray._private import services

    if os.environ.get("RAY_ADDRESS"):
        return RayTarget(os.environ["RAY_ADDRESS"], "auto: the RAY_ADDRESS environment variable")
    path = get_ray_address_file(None)
    with contextlib.suppress(OSError), open(path) as handle:
        found = handle.read().strip()
        if found:
            return RayTarget(found, f"auto: the cluster file {path} written by `ray start`")
    running = sorted(services.find_gcs_addresses())
    if running:
        return RayTarget(running[0], "auto: a Ray GCS running on this machine")
    raise ConfigError("ray_address='auto' found no Ray cluster: RAY_ADDRESS is unset, no "
                      "`ray start` cluster file exists and no Ray runs on this machine. Start "
                      "one (`ray start --head`) or pass its address ('HOST:6379').")


def _probe(target: RayTarget, deadline: float) -> None:
    host, port = target.host_port
    timeout = max(0.1, min(_PROBE_TIMEOUT, deadline - time.monotonic()))
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as error:
        hint = (" (a cluster that stopped? remove the cluster file with `ray stop`)"
                if target.source.startswith("auto: the cluster file") else "")
        raise ConfigError(f"cannot reach Ray at {target.address} ({target.source}): "
                          f"{error}{hint}") from None


def _use_token_if_available() -> bool:
    """As ray.init does for 'auto': with RAY_AUTH_MODE unset, a token found here is used.
    Whether this driver authenticates with a token."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None:
        return mode.lower() == "token"
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return False
    return maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


class _QuietSigterm(logging.Filter):
    """Ray warns that it set no SIGTERM handler off the main thread; we set our own."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "SIGTERM handler is not set" not in record.getMessage()


def _exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit (as Ray does in the main thread), so the runner can cancel
    what runs before the process ends; a handler someone else installed is kept."""
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def _init(target: RayTarget, kwargs: dict[str, Any]) -> None:
    """ray.init, with retries for a Ray Client address: the client server starts a server
    process per connection, and that start sometimes fails (seen in our multi-node tests:
    "Starting Ray client server failed") where a second try succeeds."""
    attempts = 3 if target.address.startswith("ray://") else 1
    for attempt in range(1, attempts + 1):
        try:
            ray.init(address=target.address, **kwargs)
            return
        except ConnectionError as error:
            if attempt == attempts:
                raise
            logger.warning("connecting to %s failed (%s); trying again", target.address,
                           str(error).strip().splitlines()[0] if str(error).strip() else "")
            with contextlib.suppress(Exception):
                ray.shutdown()
            time.sleep(attempt)


def _explain(error: BaseException, target: RayTarget, token: bool = True) -> ConfigError:
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    hint = ""
    if "auth" in text.lower() or "token" in text.lower():
        hint = (" The cluster uses token authentication: copy the head's ~/.ray/auth_token "
                "here, or set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH (RAY_AUTH_MODE=token).")
    elif not token and isinstance(error, ConnectionError):
        # Ray logs "InvalidAuthToken" on stderr but raises a bare ConnectionError
        hint = (" It answered, so if it uses token authentication (Ray turns it on when "
                "`ray start --head` finds ~/.ray/auth_token, or with RAY_AUTH_MODE=token), "
                "copy the head's ~/.ray/auth_token here or set RAY_AUTH_TOKEN or "
                "RAY_AUTH_TOKEN_PATH.")
    return ConfigError(f"cannot connect to Ray at {target.address} ({target.source}): "
                       f"{type(error).__name__}: {text}.{hint}")


def connect(config: Config, timeout: float | None = None) -> RayTarget:
    """Connect this process to Ray (see the module's docstring); return where it went."""
    timeout = float(timeout or config.extra.get("ray_connect_timeout") or
                    os.environ.get("SMALLPOND_RAY_CONNECT_TIMEOUT") or CONNECT_TIMEOUT)
    deadline = time.monotonic() + timeout
    target = choose_address(config)
    kwargs: dict[str, Any] = {"log_to_driver": False}
    _exit_on_sigterm()
    if target.is_local:
        kwargs["include_dashboard"] = False
        if config.extra.get("ray_num_cpus"):
            kwargs["num_cpus"] = int(config.extra["ray_num_cpus"])
        try:
            _init(target, kwargs)
        except (ConnectionError, RuntimeError) as error:
            raise _explain(error, target) from error
        return target
    _probe(target, deadline)
    token = _use_token_if_available()
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            _init(target, kwargs)
        except BaseException as error:  # handed to the waiting thread
            outcome["error"] = error

    quiet = _QuietSigterm()
    ray_logger = logging.getLogger("ray._private.worker")
    ray_logger.addFilter(quiet)
    thread = threading.Thread(target=run, name="smallpond-ray-connect", daemon=True)
    try:
        thread.start()
        while thread.is_alive():
            thread.join(0.1)  # short waits: Ctrl-C and SIGTERM are handled between them
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"could not connect to Ray at {target.address} ({target.source}) within "
                    f"{timeout:g} s (ray_connect_timeout). Is it the GCS port of `ray start "
                    "--head` (default 6379) or a Ray Client port (ray://HOST:10001), and is "
                    "the cluster up?")
    finally:
        ray_logger.removeFilter(quiet)
    if "error" in outcome:
        error = outcome["error"]
        if isinstance(error, (KeyboardInterrupt, SystemExit)):
            raise error
        raise _explain(error, target, token) from error
    return target
