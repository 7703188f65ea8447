"""A compiled loop for valsort's checksum: the sum of each record's zlib CRC-32.

The loop is written as LLVM IR with llvmlite and compiled in under 0.1 s (the IR is already
unrolled: only instruction selection runs), where numba's first call costs about a second per
process (its import, its CPU target, and scipy's BLAS probe).
Each record's CRC is computed slicing-by-8 (eight 256-entry tables, one step per 8 bytes);
two records are interleaved per iteration so that their independent table lookups overlap.
Unaligned little-endian loads: used only on little-endian machines (see `compiled_crc_sum`).
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable

import numpy as np

__all__ = ["compiled_crc_sum", "slicing_tables"]

LANES = 2  # records interleaved per loop iteration (4 measured no faster)
_COMPILED: dict[int, Callable[[int, int, int], int]] = {}
_KEEP: list = []  # engines (and their code) live as long as the process


def slicing_tables() -> np.ndarray:
    """The (8, 256) uint32 tables of slicing-by-8 for the reflected polynomial 0xEDB88320."""
    tables = np.zeros((8, 256), dtype=np.uint32)
    for value in range(256):
        crc = value
        for _ in range(8):
            crc = (crc >> 1) ^ 0xEDB88320 if crc & 1 else crc >> 1
        tables[0, value] = crc
    for value in range(256):
        for k in range(1, 8):
            previous = int(tables[k - 1, value])
            tables[k, value] = (previous >> 8) ^ int(tables[0, previous & 0xFF])
    return tables


def _module_ir(length: int) -> str:
    from llvmlite import ir

    i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
    table_type = ir.ArrayType(i32, 8 * 256)
    module = ir.Module(name=f"crc{length}")
    tables = ir.GlobalVariable(module, table_type, "tables")
    tables.global_constant = True
    tables.linkage = "internal"
    tables.initializer = ir.Constant(table_type, [int(v) for v in slicing_tables().ravel()])
    # u64 crc_sum(u8* data, i64 count, i64 stride): sum of the CRC-32 of `count` records
    function = ir.Function(module, ir.FunctionType(i64, [i8.as_pointer(), i64, i64]), "crc_sum")
    data, count, stride = function.args
    entry, wide, narrow_check, narrow, done = (function.append_basic_block(n) for n in
                                               ("entry", "wide", "narrow_check", "narrow",
                                                "done"))
    b = ir.IRBuilder(entry)
    lanes = ir.Constant(i64, LANES)
    zero = ir.Constant(i64, 0)

    def lookup(table: int, index):
        position = b.add(ir.Constant(i32, table * 256), index)
        pointer = b.gep(tables, [ir.Constant(i32, 0), position], inbounds=True)
        return b.load(pointer)

    def byte(value, shift: int):
        if shift:
            value = b.lshr(value, ir.Constant(i32, shift))
        return b.and_(value, ir.Constant(i32, 0xFF)) if shift < 24 else value

    def load_u32(record, offset: int):
        pointer = b.gep(record, [ir.Constant(i64, offset)], inbounds=True)
        return b.load(b.bitcast(pointer, i32.as_pointer()), align=1)

    def crcs(records: list) -> list:
        states = [ir.Constant(i32, 0xFFFFFFFF)] * len(records)
        offset = 0
        while offset + 8 <= length:
            for lane, record in enumerate(records):  # lanes interleaved: independent chains
                low = b.xor(load_u32(record, offset), states[lane])
                high = load_u32(record, offset + 4)
                parts = [lookup(7, byte(low, 0)), lookup(6, byte(low, 8)),
                         lookup(5, byte(low, 16)), lookup(4, byte(low, 24)),
                         lookup(3, byte(high, 0)), lookup(2, byte(high, 8)),
                         lookup(1, byte(high, 16)), lookup(0, byte(high, 24))]
                value = parts[0]
                for part in parts[1:]:
                    value = b.xor(value, part)
                states[lane] = value
            offset += 8
        while offset < length:
            for lane, record in enumerate(records):
                pointer = b.gep(record, [ir.Constant(i64, offset)], inbounds=True)
                value = b.xor(states[lane], b.zext(b.load(pointer), i32))
                states[lane] = b.xor(lookup(0, byte(value, 0)),
                                     b.lshr(states[lane], ir.Constant(i32, 8)))
            offset += 1
        return [b.zext(b.xor(s, ir.Constant(i32, 0xFFFFFFFF)), i64) for s in states]

    def record_at(index):
        return b.gep(data, [b.mul(index, stride)], inbounds=True)

    b.branch(wide)  # the wide loop checks its own bound first
    # wide loop: LANES records per iteration while i + LANES <= count
    b.position_at_start(wide)
    i = b.phi(i64, "i")
    total = b.phi(i64, "total")
    i.add_incoming(zero, entry)
    total.add_incoming(zero, entry)
    wide_body = function.append_basic_block("wide_body")
    b.cbranch(b.icmp_signed("<=", b.add(i, lanes), count), wide_body, narrow_check)
    b.position_at_start(wide_body)
    values = crcs([record_at(b.add(i, ir.Constant(i64, lane))) for lane in range(LANES)])
    new_total = total
    for value in values:
        new_total = b.add(new_total, value)
    next_i = b.add(i, lanes)
    i.add_incoming(next_i, wide_body)
    total.add_incoming(new_total, wide_body)
    b.branch(wide)
    # narrow loop: the remaining records one by one
    b.position_at_start(narrow_check)
    j = b.phi(i64, "j")
    subtotal = b.phi(i64, "subtotal")
    j.add_incoming(i, wide)
    subtotal.add_incoming(total, wide)
    b.cbranch(b.icmp_signed("<", j, count), narrow, done)
    b.position_at_start(narrow)
    value = crcs([record_at(j)])[0]
    j.add_incoming(b.add(j, ir.Constant(i64, 1)), narrow)
    subtotal.add_incoming(b.add(subtotal, value), narrow)
    b.branch(narrow_check)
    b.position_at_start(done)
    b.ret(subtotal)
    return str(module)


def _compile(length: int) -> Callable[[int, int, int], int]:
    import llvmlite.binding as llvm

    try:
        llvm.initialize()  # llvmlite < 0.45 needs it; later versions raise (done on import)
    except Exception:  # noqa: S110
        pass
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_default_triple().create_target_machine(opt=3)
    parsed = llvm.parse_assembly(_module_ir(length))
    parsed.verify()
    engine = llvm.create_mcjit_compiler(parsed, target)
    engine.finalize_object()
    _KEEP.append(engine)
    address = engine.get_function_address("crc_sum")
    return ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_int64,
                            ctypes.c_int64)(address)


def compiled_crc_sum(length: int) -> Callable[[int, int, int], int] | None:
    """`f(address, count, stride)` summing the CRC-32 of `count` records of `length` bytes,
    `stride` bytes apart; None where it cannot be compiled (no llvmlite, big-endian)."""
    if length not in _COMPILED:
        function = None
        if sys.byteorder == "little":
            try:
                function = _compile(length)
            except Exception:  # llvmlite missing or too old: the numpy path takes over
                function = None
        _COMPILED[length] = function
    return _COMPILED[length]
