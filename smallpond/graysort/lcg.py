"""gensort's 128-bit linear congruential stream, vectorized with numpy (hi, lo) uint64 pairs.

X(k+1) = A * X(k) + C mod 2^128, X(0) = 0; record i uses U(i) = X(i + 1). Jumps compose the
affine map with itself (O(log n)); bulk values come from one vectorized multiply-add per block.
"""

from __future__ import annotations

import numpy as np

__all__ = ["A", "C", "MASK128", "jump", "stream"]

A = 0x2360ED051FC65DA44385DF649FCCF645
C = 0x4A696D47726179524950202020202001
MASK128 = (1 << 128) - 1
MASK64 = (1 << 64) - 1
BLOCK = 4096


def jump(steps: int) -> tuple[int, int]:
    """(a, c) with X(k + steps) = a * X(k) + c mod 2^128."""
    a, c = 1, 0  # identity
    base_a, base_c = A, C
    while steps:
        if steps & 1:
            a, c = (base_a * a) & MASK128, (base_a * c + base_c) & MASK128
        base_a, base_c = (base_a * base_a) & MASK128, (base_a * base_c + base_c) & MASK128
        steps >>= 1
    return a, c


def _split(values) -> tuple[np.ndarray, np.ndarray]:
    hi = np.array([v >> 64 for v in values], dtype=np.uint64)
    lo = np.array([v & MASK64 for v in values], dtype=np.uint64)
    return hi, lo


def _mul_hi64(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """High 64 bits of the 128-bit products a * b (uint64), through 32-bit limbs."""
    m32 = np.uint64(0xFFFFFFFF)
    s32 = np.uint64(32)
    a0, a1 = a & m32, a >> s32
    b0, b1 = b & m32, b >> s32
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    middle = (p00 >> s32) + (p01 & m32) + (p10 & m32)
    return p11 + (p01 >> s32) + (p10 >> s32) + (middle >> s32)


_TABLES: dict[int, tuple[np.ndarray, ...]] = {}


def _block_maps(block: int) -> tuple[np.ndarray, ...]:
    if block not in _TABLES:
        maps = [(1, 0)]
        for _ in range(block - 1):
            a, c = maps[-1]
            maps.append(((A * a) & MASK128, (A * c + C) & MASK128))
        a_hi, a_lo = _split([m[0] for m in maps])
        c_hi, c_lo = _split([m[1] for m in maps])
        _TABLES[block] = (a_hi, a_lo, c_hi, c_lo)
    return _TABLES[block]


def stream(first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """X(first) .. X(first + count - 1) as (hi, lo) uint64 arrays."""
    block = min(BLOCK, max(1, count))
    a_hi, a_lo, c_hi, c_lo = _block_maps(block)
    blocks = -(-count // block)
    step_a, step_c = jump(block)
    starts = [jump(first)[1]]
    for _ in range(blocks - 1):
        starts.append((step_a * starts[-1] + step_c) & MASK128)
    x_hi, x_lo = _split(starts)
    x_hi, x_lo = x_hi[:, None], x_lo[:, None]
    with np.errstate(over="ignore"):
        lo = x_lo * a_lo
        hi = _mul_hi64(np.broadcast_to(x_lo, lo.shape), np.broadcast_to(a_lo, lo.shape))
        hi = hi + x_hi * a_lo + x_lo * a_hi
        out_lo = lo + c_lo
        hi = hi + c_hi + (out_lo < lo).astype(np.uint64)
    return hi.ravel()[:count], out_lo.ravel()[:count]
