"""Fault injection (smallpond 0.15's `fault_inject_prob`): attempts fail on purpose.

With probability p an attempt raises `InjectedFault`, either before its kernel runs or after
it wrote its files and before it commits (so the cleanup of a half-done attempt is exercised
too). The scheduling loop counts it like a lost worker: the task runs again, at most
`max_retries` times. The draw is a hash of (seed, task key, attempt number): a job with the same
seed fails the same attempts, whatever runner or worker runs them.
"""

from __future__ import annotations

import hashlib

__all__ = ["InjectedFault", "maybe_fail"]


class InjectedFault(Exception):
    """An attempt failed because fault injection chose it; the task may run again."""


def _draw(seed: int, key: str, attempt: int, salt: str) -> float:
    digest = hashlib.sha256(f"{seed}:{key}:{attempt}:{salt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def maybe_fail(probability: float, seed: int, key: str, attempt: int, point: str,
               what: str) -> None:
    """Raise InjectedFault at `point` ("before" or "after" the kernel) if this attempt drew
    a fault there."""
    if probability <= 0 or _draw(seed, key, attempt, "fail") >= probability:
        return
    chosen = "before" if _draw(seed, key, attempt, "point") < 0.5 else "after"
    if chosen == point:
        raise InjectedFault(f"injected fault in {what}, attempt {attempt}, {point} its kernel "
                            f"(fault_inject_prob={probability:g})")
