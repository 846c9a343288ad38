"""A small eBPF assembler: the instructions of Documentation/bpf/standardization/
instruction-set.rst that the exporter's programs use, encoded with labels for jumps.

Each instruction is 8 bytes: opcode, destination and source register (4 bits each), a signed
16-bit offset and a signed 32-bit immediate, in the host's byte order; a 64-bit immediate load
(used for map file descriptors) takes two. Jump offsets count instructions from the one after
the jump. Nothing here talks to the kernel::

    a = Asm()
    a.mov(R0, 0)
    a.exit()
    code = a.assemble()  # bytes for BPF_PROG_LOAD
"""

from __future__ import annotations

import struct
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple, Union

# Registers: r0 return value, r1-r5 arguments (clobbered by calls), r6-r9 kept across calls,
# r10 the read-only frame pointer.
R0, R1, R2, R3, R4, R5, R6, R7, R8, R9, R10 = range(11)
FP = R10

# Instruction classes.
LD, LDX, ST, STX, ALU, JMP, JMP32, ALU64 = 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07
# Sizes.
W, H, B, DW = 0x00, 0x08, 0x10, 0x18
SIZES = {1: B, 2: H, 4: W, 8: DW}
# Modes.
IMM, MEM, ATOMIC = 0x00, 0x60, 0xC0
# Sources.
K, X = 0x00, 0x08
# ALU operations.
ALU_OPS = {"add": 0x00, "sub": 0x10, "mul": 0x20, "div": 0x30, "or": 0x40, "and": 0x50,
           "lsh": 0x60, "rsh": 0x70, "neg": 0x80, "mod": 0x90, "xor": 0xA0, "mov": 0xB0,
           "arsh": 0xC0}
END = 0xD0
TO_LE, TO_BE = 0x00, 0x08
# Jump operations.
JMP_OPS = {"eq": 0x10, "gt": 0x20, "ge": 0x30, "set": 0x40, "ne": 0x50, "sgt": 0x60,
           "sge": 0x70, "lt": 0xA0, "le": 0xB0, "slt": 0xC0, "sle": 0xD0}
JA, CALL, EXIT = 0x00, 0x80, 0x90
ATOMIC_ADD = 0x00
PSEUDO_MAP_FD = 1

# Helper functions (include/uapi/linux/bpf.h, enum bpf_func_id).
MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, PROBE_READ_KERNEL = 1, 2, 113

Src = Union[int, "Reg"]


class AsmError(ValueError):
    """An instruction that cannot be encoded (an unknown label, an out-of-range value)."""


@dataclass(frozen=True)
class Reg:
    """A register as a source operand, to tell it from an immediate: ``a.add(R1, reg(R2))``."""

    n: int


def reg(n: int) -> Reg:
    return Reg(n)


def _check_reg(n: int) -> int:
    if not 0 <= n <= 10:
        raise AsmError(f"no register r{n}")
    return n


def _s(bits: int, v: int, what: str) -> int:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if not lo <= v <= hi:
        raise AsmError(f"{what} {v} does not fit {bits} signed bits")
    return v


def encode(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0,
           byteorder: str = sys.byteorder) -> bytes:
    """One 8-byte instruction. The register nibbles follow the host's bit-field order: on a
    little-endian host dst is the low nibble, on a big-endian one the high nibble."""
    _check_reg(dst)
    _check_reg(src)
    if not 0 <= code <= 0xFF:
        raise AsmError(f"opcode {code:#x} is not a byte")
    regs = (src << 4) | dst if byteorder == "little" else (dst << 4) | src
    fmt = "<BBhi" if byteorder == "little" else ">BBhi"
    return struct.pack(fmt, code, regs, _s(16, off, "offset"), _s(32, imm, "immediate"))


class Asm:
    """An instruction list with labels. Methods append one instruction (two for
    :meth:`ld_map_fd`); :meth:`assemble` resolves the jumps and returns the program."""

    def __init__(self) -> None:
        # (code, dst, src, off, imm, label to jump to or None)
        self._insns: List[Tuple[int, int, int, int, int, Optional[str]]] = []
        self._labels: Dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._insns)

    def _emit(self, code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0,
              target: Optional[str] = None) -> None:
        self._insns.append((code, _check_reg(dst), _check_reg(src), off, imm, target))

    def label(self, name: str) -> None:
        if name in self._labels:
            raise AsmError(f"label {name!r} defined twice")
        self._labels[name] = len(self._insns)

    # --- arithmetic ----------------------------------------------------------------------

    def alu(self, op: str, dst: int, src: Src, bits: int = 64) -> None:
        """``dst op= src`` on 64 (or 32) bits; ``src`` an immediate or :func:`reg`."""
        if op not in ALU_OPS:
            raise AsmError(f"unknown ALU operation {op!r}")
        cls = ALU64 if bits == 64 else ALU
        if isinstance(src, Reg):
            self._emit(cls | ALU_OPS[op] | X, dst, src.n)
        else:
            self._emit(cls | ALU_OPS[op] | K, dst, 0, 0, _s(32, src, "immediate"))

    def mov(self, dst: int, src: Src) -> None:
        self.alu("mov", dst, src)

    def add(self, dst: int, src: Src) -> None:
        self.alu("add", dst, src)

    def lsh(self, dst: int, src: Src) -> None:
        self.alu("lsh", dst, src)

    def or_(self, dst: int, src: Src) -> None:
        self.alu("or", dst, src)

    def and_(self, dst: int, src: Src) -> None:
        self.alu("and", dst, src)

    def to_be(self, dst: int, bits: int) -> None:
        """Convert ``dst`` from big-endian (network order) to the host's order, or back: a
        byte swap of the low ``bits`` bits on a little-endian host, a truncation otherwise."""
        if bits not in (16, 32, 64):
            raise AsmError(f"byte swap of {bits} bits")
        self._emit(ALU | END | TO_BE, dst, 0, 0, bits)

    # --- memory --------------------------------------------------------------------------

    def ldx(self, size: int, dst: int, src: int, off: int) -> None:
        """``dst = *(u<size*8> *)(src + off)``, zero-extended."""
        self._emit(LDX | MEM | _size(size), dst, src, _s(16, off, "offset"))

    def stx(self, size: int, dst: int, off: int, src: int) -> None:
        """``*(u<size*8> *)(dst + off) = src``."""
        self._emit(STX | MEM | _size(size), dst, src, _s(16, off, "offset"))

    def st(self, size: int, dst: int, off: int, imm: int) -> None:
        """``*(u<size*8> *)(dst + off) = imm``."""
        self._emit(ST | MEM | _size(size), dst, 0, _s(16, off, "offset"), _s(32, imm, "immediate"))

    def atomic_add(self, size: int, dst: int, off: int, src: int) -> None:
        """``lock *(u<size*8> *)(dst + off) += src`` (4 or 8 bytes)."""
        if size not in (4, 8):
            raise AsmError("atomic add is on 4 or 8 bytes")
        self._emit(STX | ATOMIC | _size(size), dst, src, _s(16, off, "offset"), ATOMIC_ADD)

    def ld_imm64(self, dst: int, value: int, src: int = 0) -> None:
        """``dst = value`` (64 bits): two instruction slots."""
        if not -(1 << 63) <= value < (1 << 64):
            raise AsmError(f"immediate {value} does not fit 64 bits")
        value &= (1 << 64) - 1
        lo, hi = value & 0xFFFFFFFF, value >> 32
        self._emit(LD | DW | IMM, dst, src, 0, struct.unpack("<i", struct.pack("<I", lo))[0])
        self._emit(0, 0, 0, 0, struct.unpack("<i", struct.pack("<I", hi))[0])

    def ld_map_fd(self, dst: int, fd: int) -> None:
        """``dst = &map`` for the map whose file descriptor is ``fd`` (the kernel turns the
        descriptor into the map's address when it loads the program)."""
        self.ld_imm64(dst, fd, src=PSEUDO_MAP_FD)

    # --- control -------------------------------------------------------------------------

    def jmp(self, op: str, dst: int, src: Src, target: str, bits: int = 64) -> None:
        """``if dst <op> src goto target``; ops as in :data:`JMP_OPS` (unsigned unless s-)."""
        if op not in JMP_OPS:
            raise AsmError(f"unknown jump condition {op!r}")
        cls = JMP if bits == 64 else JMP32
        if isinstance(src, Reg):
            self._emit(cls | JMP_OPS[op] | X, dst, src.n, 0, 0, target)
        else:
            self._emit(cls | JMP_OPS[op] | K, dst, 0, 0, _s(32, src, "immediate"), target)

    def map_lookup(self, map_fd: int, key_at: int) -> None:
        """``r0 = bpf_map_lookup_elem(map, fp + key_at)``: the value of the key that lies on the
        stack at ``key_at`` (negative) in the map whose descriptor is ``map_fd``, or 0 when
        absent. Clobbers r1 to r5, as every call does."""
        self.ld_map_fd(R1, map_fd)
        self.mov(R2, reg(FP))
        self.add(R2, key_at)
        self.call(MAP_LOOKUP_ELEM)

    def ja(self, target: str) -> None:
        self._emit(JMP | JA, 0, 0, 0, 0, target)

    def call(self, helper: int) -> None:
        self._emit(JMP | CALL, 0, 0, 0, helper)

    def exit(self) -> None:
        self._emit(JMP | EXIT)

    # --- output --------------------------------------------------------------------------

    def assemble(self, byteorder: str = sys.byteorder) -> bytes:
        out = []
        for pc, (code, dst, src, off, imm, target) in enumerate(self._insns):
            if target is not None:
                if target not in self._labels:
                    raise AsmError(f"jump to undefined label {target!r}")
                off = self._labels[target] - (pc + 1)
            out.append(encode(code, dst, src, off, imm, byteorder))
        return b"".join(out)


def _size(size: int) -> int:
    if size not in SIZES:
        raise AsmError(f"no load or store of {size} bytes")
    return SIZES[size]
