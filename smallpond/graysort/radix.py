"""A compiled LSD radix sort of uint64 values (11-bit digits), for the packed sort keys.

sort_order packs each record's key above its index into a uint64; sorting those values by their
key bits alone (the digits above `shift`), stably, gives the same order as sorting the whole
values (the index bits below are already ascending). Four passes over 1.25 M values read and
write 40 MB each, about a third of numpy's sort here. One read counts every pass's digits; a
pass whose digit is the same for all values is skipped.

    radix{P}(data, scratch, count, shift, counts) -> 0 if the result is in data, 1 in scratch

for P passes; `counts` is P x 2048 zeroed uint32.
"""

from __future__ import annotations

import ctypes

import numpy as np

__all__ = ["radix_sort", "warm", "DIGIT_BITS", "MIN_COUNT"]

DIGIT_BITS = 11
BUCKETS = 1 << DIGIT_BITS
MIN_COUNT = 1 << 14  # below this numpy's sort is as fast
MAX_PASSES = 6
_FUNCTIONS: dict[int, ctypes._CFuncPtr] | None = None
_FAILED = False


def _module_ir() -> str:
    from llvmlite import ir

    i32, i64 = ir.IntType(32), ir.IntType(64)
    p64, p32 = i64.as_pointer(), i32.as_pointer()
    module = ir.Module(name="radix")
    for passes in range(1, MAX_PASSES + 1):
        function = ir.Function(module, ir.FunctionType(i64, [p64, p64, i64, i64, p32]),
                               f"radix{passes}")
        _emit(function, passes, ir, i32, i64)
    return str(module)


def _loop(b, function, ir, i64, count, name, body):
    """for (i = 0; i < count; i++) body(b, i); leaves the builder after the loop."""
    head, inside, after = (function.append_basic_block(f"{name}_{n}")
                           for n in ("head", "body", "after"))
    start = b.block
    b.branch(head)
    b.position_at_start(head)
    i = b.phi(i64, f"{name}_i")
    i.add_incoming(ir.Constant(i64, 0), start)
    b.cbranch(b.icmp_signed("<", i, count), inside, after)
    b.position_at_start(inside)
    body(b, i)
    i.add_incoming(b.add(i, ir.Constant(i64, 1)), b.block)
    b.branch(head)
    b.position_at_start(after)


def _emit(function, passes: int, ir, i32, i64) -> None:
    data, scratch, count, shift, counts = function.args
    b = ir.IRBuilder(function.append_basic_block("entry"))
    mask = ir.Constant(i64, BUCKETS - 1)

    def digit(value, p):
        return b.and_(b.lshr(value, b.add(shift, ir.Constant(i64, DIGIT_BITS * p))), mask)

    def slot(p, d):
        return b.gep(counts, [b.add(ir.Constant(i64, BUCKETS * p), d)], inbounds=True)

    def count_digits(b, i):
        value = b.load(b.gep(data, [i], inbounds=True))
        for p in range(passes):
            pointer = slot(p, digit(value, p))
            b.store(b.add(b.load(pointer), ir.Constant(i32, 1)), pointer)

    _loop(b, function, ir, i64, count, "count", count_digits)
    for p in range(passes):  # exclusive prefix sums, in place
        total = b.alloca(i32)
        b.store(ir.Constant(i32, 0), total)

        def scan(b, d, p=p, total=total):
            pointer = slot(p, d)
            here = b.load(pointer)
            running = b.load(total)
            b.store(running, pointer)
            b.store(b.add(running, here), total)

        _loop(b, function, ir, i64, ir.Constant(i64, BUCKETS), f"scan{p}", scan)
    source, target = data, scratch
    for p in range(passes):
        # skip the pass when every value has the same digit (its first value's bucket starts
        # at 0 and the next bucket at count)
        first = digit(b.load(data), p)
        start = b.load(slot(p, first))
        end = b.select(b.icmp_unsigned("<", first, ir.Constant(i64, BUCKETS - 1)),
                       b.zext(b.load(slot(p, b.add(first, ir.Constant(i64, 1)))), i64), count)
        trivial = b.and_(b.icmp_unsigned("==", start, ir.Constant(i32, 0)),
                         b.icmp_signed("==", end, count))
        do_pass = function.append_basic_block(f"pass{p}")
        joined = function.append_basic_block(f"joined{p}")
        before = b.block
        b.cbranch(trivial, joined, do_pass)
        b.position_at_start(do_pass)

        def scatter(b, i, p=p, source=source, target=target):
            value = b.load(b.gep(source, [i], inbounds=True))
            pointer = slot(p, digit(value, p))
            position = b.load(pointer)
            b.store(value, b.gep(target, [b.zext(position, i64)], inbounds=True))
            b.store(b.add(position, ir.Constant(i32, 1)), pointer)

        _loop(b, function, ir, i64, count, f"scatter{p}", scatter)
        done_pass = b.block
        b.branch(joined)
        b.position_at_start(joined)
        new_source = b.phi(source.type)
        new_source.add_incoming(source, before)
        new_source.add_incoming(target, done_pass)
        new_target = b.phi(target.type)
        new_target.add_incoming(target, before)
        new_target.add_incoming(source, done_pass)
        source, target = new_source, new_target
    b.ret(b.zext(b.icmp_unsigned("!=", source, data), i64))


def _functions() -> dict[int, ctypes._CFuncPtr] | None:
    global _FUNCTIONS, _FAILED
    if _FUNCTIONS is None and not _FAILED:
        try:
            from smallpond.graysort.jit import build

            engine = build(_module_ir())
            kind = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                    ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
            _FUNCTIONS = {p: kind(engine.get_function_address(f"radix{p}"))
                          for p in range(1, MAX_PASSES + 1)}
        except Exception:  # llvmlite missing: numpy's sort takes over
            _FAILED = True
    return _FUNCTIONS


def warm() -> None:
    """Compile now (the fork server calls this before forking workers)."""
    _functions()


def radix_sort(values: np.ndarray, scratch: np.ndarray, shift: int) -> np.ndarray | None:
    """Sort uint64 `values` by their bits from `shift` up, stably; return the sorted array
    (`values` or `scratch`, same length), or None where the loop is not compiled."""
    passes = -(-(64 - shift) // DIGIT_BITS)
    functions = _functions() if 1 <= passes <= MAX_PASSES else None
    if functions is None or len(values) == 0:
        return None
    counts = np.zeros(passes * BUCKETS, dtype=np.uint32)
    where = functions[passes](values.ctypes.data, scratch.ctypes.data, len(values), shift,
                              counts.ctypes.data)
    return scratch if where else values
