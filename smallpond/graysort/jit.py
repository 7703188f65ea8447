"""Compiled loops over fixed-length records: valsort's checksum, and gathers.

The loops are written as LLVM IR with llvmlite and compiled in about 0.1 s (the IR is already
unrolled: only instruction selection runs), where numba's first call costs about a second per
process (its import, its CPU target, and scipy's BLAS probe). Per record length, one module:

    crc_sum(data, count, stride) -> u64      sum of the zlib CRC-32 of `count` records: by
                                             carry-less multiplication on x86 (crc_fold.py,
                                             ~10 GB/s), else slicing-by-8 with two records
                                             interleaved (~3 GB/s)
    order_stats(data, count, stride, stats)  10-byte big-endian keys at the start of each
                                             record against the record before: stats[0] =
                                             out of order, stats[1] = equal, stats[2] = first
                                             out-of-order index (-1: none)
    gather(src, index, count, dst)           dst[i] = src[index[i]] (rows of `length` bytes),
                                             the rows 16 ahead prefetched: gathers from a
                                             mapped file or in sorted order wait on memory,
                                             not on arithmetic (40% less CPU than np.take)

Unaligned little-endian loads: used only on little-endian machines (see `compiled`).
"""

from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass

import numpy as np

from smallpond.graysort import crc_fold

__all__ = ["compiled", "Loops", "slicing_tables", "compiled_crc_sum", "gather_rows",
           "order_stats", "has_clmul", "build"]

LANES = 2  # records interleaved per iteration of crc_sum (4 measured no faster)
PREFETCH = 16  # rows ahead that a gather asks the memory system for
_COMPILED: dict[int, Loops | None] = {}
_KEEP: list = []  # engines (and their code) live as long as the process


@dataclass(frozen=True)
class Loops:
    """Callables taking addresses (ints) and counts; see the module docstring."""

    crc_sum: ctypes._CFuncPtr
    order_stats: ctypes._CFuncPtr | None  # records of at least 10 bytes
    gather: ctypes._CFuncPtr


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


class _Emitter:
    """IR building blocks shared by the loops of one module."""

    def __init__(self, length: int, clmul: bool):
        from llvmlite import ir

        self.ir, self.length = ir, length
        self.i8, self.i16, self.i32, self.i64 = (ir.IntType(n) for n in (8, 16, 32, 64))
        self.module = ir.Module(name=f"records{length}")
        table_type = ir.ArrayType(self.i32, 8 * 256)
        self.tables = ir.GlobalVariable(self.module, table_type, "tables")
        self.tables.global_constant = True
        self.tables.linkage = "internal"
        self.tables.initializer = ir.Constant(table_type,
                                              [int(v) for v in slicing_tables().ravel()])
        p8 = self.i8.as_pointer()
        self.prefetch = ir.Function(self.module, ir.FunctionType(
            ir.VoidType(), [p8, self.i32, self.i32, self.i32]), _prefetch_name())
        self.bswap64 = ir.Function(self.module, ir.FunctionType(self.i64, [self.i64]),
                                   "llvm.bswap.i64")
        self.bswap16 = ir.Function(self.module, ir.FunctionType(self.i16, [self.i16]),
                                   "llvm.bswap.i16")
        if clmul:  # carry-less multiplication (crc_fold.py)
            self.folded = crc_fold.constants(length)
            fold_type = ir.ArrayType(self.i32, crc_fold.PRODUCT_BYTES * 256)
            self.fold_tables = ir.GlobalVariable(self.module, fold_type, "fold_tables")
            self.fold_tables.global_constant = True
            self.fold_tables.linkage = "internal"
            self.fold_tables.initializer = ir.Constant(
                fold_type, [v for row in self.folded[1] for v in row])
            vector = ir.VectorType(self.i64, 2)
            self.clmul = ir.Function(self.module, ir.FunctionType(
                vector, [vector, vector, self.i8]), "llvm.x86.pclmulqdq")
        self.b = None

    def const(self, type_, value):
        return self.ir.Constant(type_, value)

    def at(self, pointer, offset: int, type_):
        gep = self.b.gep(pointer, [self.const(self.i64, offset)], inbounds=True)
        return self.b.bitcast(gep, type_.as_pointer()) if type_ is not self.i8 else gep

    def load(self, pointer, offset: int, type_):
        return self.b.load(self.at(pointer, offset, type_), align=1)

    def lookup(self, table: int, index):
        position = self.b.add(self.const(self.i32, table * 256), index)
        return self.b.load(self.b.gep(self.tables, [self.const(self.i32, 0), position],
                                      inbounds=True))

    def byte(self, value, shift: int):
        if shift:
            value = self.b.lshr(value, self.const(self.i32, shift))
        return self.b.and_(value, self.const(self.i32, 0xFF)) if shift < 24 else value

    def crcs(self, records: list) -> list:
        """The CRC-32 (as i64) of each record pointer, the lanes interleaved."""
        b, i32 = self.b, self.i32
        states = [self.const(i32, 0xFFFFFFFF)] * len(records)
        offset = 0
        while offset + 8 <= self.length:
            for lane, record in enumerate(records):
                low = b.xor(self.load(record, offset, i32), states[lane])
                high = self.load(record, offset + 4, i32)
                parts = [self.lookup(7, self.byte(low, 0)), self.lookup(6, self.byte(low, 8)),
                         self.lookup(5, self.byte(low, 16)), self.lookup(4, self.byte(low, 24)),
                         self.lookup(3, self.byte(high, 0)), self.lookup(2, self.byte(high, 8)),
                         self.lookup(1, self.byte(high, 16)),
                         self.lookup(0, self.byte(high, 24))]
                value = parts[0]
                for part in parts[1:]:
                    value = b.xor(value, part)
                states[lane] = value
            offset += 8
        while offset < self.length:
            for lane, record in enumerate(records):
                value = b.xor(states[lane], b.zext(self.load(record, offset, self.i8), i32))
                states[lane] = b.xor(self.lookup(0, self.byte(value, 0)),
                                     b.lshr(states[lane], self.const(i32, 8)))
            offset += 1
        return [b.zext(b.xor(s, self.const(i32, 0xFFFFFFFF)), self.i64) for s in states]

    def copy(self, source, target) -> None:
        offset = 0
        for type_, size in ((self.i64, 8), (self.i32, 4), (self.i16, 2), (self.i8, 1)):
            while offset + size <= self.length:
                value = self.load(source, offset, type_)
                self.b.store(value, self.at(target, offset, type_), align=1)
                offset += size


def has_clmul() -> bool:
    """Whether this CPU multiplies carry-less (x86 PCLMULQDQ)."""
    import llvmlite.binding as llvm

    return (llvm.get_process_triple().startswith("x86_64")
            and bool(llvm.get_host_cpu_features().get("pclmul")))


def _prefetch_name() -> str:
    import llvmlite.binding as llvm

    return "llvm.prefetch.p0" if llvm.llvm_version_info[0] >= 15 else "llvm.prefetch.p0i8"


def _crc_sum(e: _Emitter, crcs) -> None:
    ir, i64 = e.ir, e.i64
    function = ir.Function(e.module, ir.FunctionType(i64, [e.i8.as_pointer(), i64, i64]),
                           "crc_sum")
    data, count, stride = function.args
    entry, wide, wide_body, narrow_check, narrow, done = (
        function.append_basic_block(n) for n in ("entry", "wide", "wide_body", "narrow_check",
                                                 "narrow", "done"))
    e.b = b = ir.IRBuilder(entry)
    b.branch(wide)
    b.position_at_start(wide)
    i, total = b.phi(i64, "i"), b.phi(i64, "total")
    i.add_incoming(e.const(i64, 0), entry)
    total.add_incoming(e.const(i64, 0), entry)
    b.cbranch(b.icmp_signed("<=", b.add(i, e.const(i64, LANES)), count), wide_body,
              narrow_check)
    b.position_at_start(wide_body)
    values = crcs([b.gep(data, [b.mul(b.add(i, e.const(i64, lane)), stride)], inbounds=True)
                   for lane in range(LANES)])
    new_total = total
    for value in values:
        new_total = b.add(new_total, value)
    i.add_incoming(b.add(i, e.const(i64, LANES)), wide_body)
    total.add_incoming(new_total, wide_body)
    b.branch(wide)
    b.position_at_start(narrow_check)
    j, subtotal = b.phi(i64, "j"), b.phi(i64, "subtotal")
    j.add_incoming(i, wide)
    subtotal.add_incoming(total, wide)
    b.cbranch(b.icmp_signed("<", j, count), narrow, done)
    b.position_at_start(narrow)
    value = crcs([b.gep(data, [b.mul(j, stride)], inbounds=True)])[0]
    j.add_incoming(b.add(j, e.const(i64, 1)), narrow)
    subtotal.add_incoming(b.add(subtotal, value), narrow)
    b.branch(narrow_check)
    b.position_at_start(done)
    b.ret(subtotal)


def _order_stats(e: _Emitter) -> None:
    ir, i64, i16 = e.ir, e.i64, e.i16
    function = ir.Function(e.module, ir.FunctionType(
        ir.VoidType(), [e.i8.as_pointer(), i64, i64, i64.as_pointer()]), "order_stats")
    data, count, stride, stats = function.args
    entry, loop, body, done = (function.append_basic_block(n)
                               for n in ("entry", "loop", "body", "done"))
    e.b = b = ir.IRBuilder(entry)

    def key(index):
        record = b.gep(data, [b.mul(index, stride)], inbounds=True)
        return (b.call(e.bswap64, [e.load(record, 0, i64)]),
                b.call(e.bswap16, [e.load(record, 8, i16)]))

    b.branch(loop)
    b.position_at_start(loop)
    i = b.phi(i64, "i")
    carried = [b.phi(i64, n) for n in ("unordered", "equal", "first")]
    i.add_incoming(e.const(i64, 1), entry)
    for phi, start in zip(carried, (0, 0, -1)):
        phi.add_incoming(e.const(i64, start), entry)
    b.cbranch(b.icmp_signed("<", i, count), body, done)
    b.position_at_start(body)
    (prefix, suffix), (before, before_suffix) = key(i), key(b.sub(i, e.const(i64, 1)))
    same = b.icmp_unsigned("==", prefix, before)
    less = b.or_(b.icmp_unsigned("<", prefix, before),
                 b.and_(same, b.icmp_unsigned("<", suffix, before_suffix)))
    equal = b.and_(same, b.icmp_unsigned("==", suffix, before_suffix))
    unordered, equals, first = carried
    first_now = b.icmp_signed("<", first, e.const(i64, 0))
    following = [b.add(unordered, b.zext(less, i64)), b.add(equals, b.zext(equal, i64)),
                 b.select(b.and_(less, first_now), i, first)]
    i.add_incoming(b.add(i, e.const(i64, 1)), body)
    for phi, value in zip(carried, following):
        phi.add_incoming(value, body)
    b.branch(loop)
    b.position_at_start(done)
    for slot, value in enumerate(carried):
        b.store(value, b.gep(stats, [e.const(i64, slot)]))
    b.ret_void()


def _gather(e: _Emitter) -> None:
    ir, i64 = e.ir, e.i64
    p8 = e.i8.as_pointer()
    function = ir.Function(e.module, ir.FunctionType(ir.VoidType(),
                                                     [p8, i64.as_pointer(), i64, p8]), "gather")
    src, index, count, dst = function.args
    entry, loop, body, done = (function.append_basic_block(n)
                               for n in ("entry", "loop", "body", "done"))
    e.b = b = ir.IRBuilder(entry)
    row = e.const(i64, e.length)
    b.branch(loop)
    b.position_at_start(loop)
    i = b.phi(i64, "i")
    i.add_incoming(e.const(i64, 0), entry)
    b.cbranch(b.icmp_signed("<", i, count), body, done)
    b.position_at_start(body)
    ahead = b.add(i, e.const(i64, PREFETCH))
    ahead = b.select(b.icmp_signed("<", ahead, count), ahead, i)
    far = b.gep(src, [b.mul(b.load(b.gep(index, [ahead])), row)], inbounds=True)
    for line in range(0, e.length, 64):
        b.call(e.prefetch, [b.gep(far, [e.const(i64, line)], inbounds=True),
                            e.const(e.i32, 0), e.const(e.i32, 3), e.const(e.i32, 1)])
    source = b.gep(src, [b.mul(b.load(b.gep(index, [i])), row)], inbounds=True)
    e.copy(source, b.gep(dst, [b.mul(i, row)], inbounds=True))
    i.add_incoming(b.add(i, e.const(i64, 1)), body)
    b.branch(loop)
    b.position_at_start(done)
    b.ret_void()


def build(module_ir: str):
    """Compile LLVM IR for this CPU; the engine (and its code) lives as long as the process."""
    import llvmlite.binding as llvm

    try:
        llvm.initialize()  # llvmlite < 0.45 needs it; later versions raise (done on import)
    except Exception:  # noqa: S110
        pass
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3)
    parsed = llvm.parse_assembly(module_ir)
    parsed.verify()
    engine = llvm.create_mcjit_compiler(parsed, target)
    engine.finalize_object()
    _KEEP.append(engine)
    return engine


def _compile(length: int, clmul: bool | None = None) -> Loops:
    """Compile the loops; the CRC by carry-less multiplication where the CPU has it (or as
    `clmul` says), else slicing-by-8."""
    if clmul is None:
        clmul = has_clmul()
    emitter = _Emitter(length, clmul)
    _crc_sum(emitter, (lambda records: crc_fold.emit_crcs(emitter, records)) if clmul
             else emitter.crcs)
    _gather(emitter)
    if length >= 10:
        _order_stats(emitter)
    address = build(str(emitter.module)).get_function_address
    vp, i64 = ctypes.c_void_p, ctypes.c_int64
    return Loops(
        crc_sum=ctypes.CFUNCTYPE(ctypes.c_uint64, vp, i64, i64)(address("crc_sum")),
        order_stats=ctypes.CFUNCTYPE(None, vp, i64, i64, vp)(address("order_stats"))
        if length >= 10 else None,
        gather=ctypes.CFUNCTYPE(None, vp, vp, i64, vp)(address("gather")))


def compiled(length: int) -> Loops | None:
    """The loops for records of `length` bytes; None where they cannot be compiled (no
    llvmlite, or a big-endian machine): callers then use numpy."""
    if length not in _COMPILED:
        loops = None
        if sys.byteorder == "little":
            try:
                loops = _compile(length)
            except Exception:  # llvmlite missing or too old: the numpy paths take over
                loops = None
        _COMPILED[length] = loops
    return _COMPILED[length]


def compiled_crc_sum(length: int):
    """`f(address, count, stride)` summing CRC-32s, or None (see `compiled`)."""
    loops = compiled(length)
    return loops.crc_sum if loops else None


def order_stats(records: np.ndarray) -> tuple[int, int, int | None] | None:
    """(out of order, equal, first out-of-order index or None) of the 10-byte keys leading
    (n, L) uint8 rows, compared with the row before; None where not compiled."""
    if len(records) < 2:
        return 0, 0, None
    loops = compiled(records.shape[1]) if records.ndim == 2 and records.strides[1] == 1 \
        else None
    if loops is None or loops.order_stats is None:
        return None
    stats = np.zeros(3, dtype=np.int64)
    loops.order_stats(records.ctypes.data, len(records), records.strides[0], stats.ctypes.data)
    return int(stats[0]), int(stats[1]), None if stats[2] < 0 else int(stats[2])


def gather_rows(source: np.ndarray, index: np.ndarray, out: np.ndarray) -> None:
    """out[i] = source[index[i]] for (n, L) uint8 arrays: the compiled gather where it applies,
    np.take elsewhere. Indices are bounds-checked here (the compiled loop does not)."""
    if len(index) and (int(index.min()) < 0 or int(index.max()) >= len(source)):
        raise IndexError(f"row index out of range 0..{len(source) - 1}")
    loops = compiled(source.shape[1]) if source.ndim == 2 else None
    usable = (loops is not None and source.flags.c_contiguous and out.flags.c_contiguous
              and out.shape == (len(index), source.shape[1]) and out.dtype == np.uint8
              and source.dtype == np.uint8)
    if not usable:
        np.take(source, index, axis=0, out=out)
        return
    index = np.ascontiguousarray(index, dtype=np.int64)
    loops.gather(source.ctypes.data, index.ctypes.data, len(index), out.ctypes.data)
