"""The kernel's own type information (BTF, ``/sys/kernel/btf/vmlinux``): where a member of a
kernel structure lies, so that a program can read a socket's field without an offset written
in the code. Only what that needs: the header, the type section walked once, member lookup
through anonymous structs and unions, and the size of a member's integer type.

The format is Documentation/bpf/btf.rst: a header (magic 0xEB9F), then ``struct btf_type``
records of 12 bytes, each followed by data whose size its kind gives, numbered from 1; names
are offsets into the string section. A member's offset is in bits; in a struct whose
``kind_flag`` is set, its top 8 bits are the bitfield size.
"""

from __future__ import annotations

import struct
import sys
from array import array
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

VMLINUX = "/sys/kernel/btf/vmlinux"
MAGIC = 0xEB9F

INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT = range(1, 12)
FUNC, FUNC_PROTO, VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64 = range(12, 20)
_MODIFIERS = (TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG)
# Bytes after the 12-byte record, per kind, for vlen entries.
_EXTRA = {INT: (4, 0), ARRAY: (12, 0), STRUCT: (0, 12), UNION: (0, 12), ENUM: (0, 8),
          FUNC_PROTO: (0, 8), VAR: (4, 0), DATASEC: (0, 12), DECL_TAG: (4, 0), ENUM64: (0, 12)}


class BtfError(ValueError):
    """No BTF, BTF this reader does not understand, or no such structure or member."""


@dataclass(frozen=True)
class Member:
    offset: int  # bytes from the start of the structure
    size: int  # bytes of its integer type


@dataclass
class _Type:
    kind: int
    name_off: int
    info: int
    size_or_type: int
    data: int  # offset of the kind's data in the blob


class Btf:
    def __init__(self, blob: bytes) -> None:
        if len(blob) < 24:
            raise BtfError("BTF shorter than its header")
        order = "<" if struct.unpack_from("<H", blob, 0)[0] == MAGIC else ">"
        magic, _ver, _flags, hdr_len, t_off, t_len, s_off, s_len = struct.unpack_from(
            order + "HBBIIIII", blob, 0)
        if magic != MAGIC:
            raise BtfError(f"BTF magic {magic:#x}, not {MAGIC:#x}")
        if order != ("<" if sys.byteorder == "little" else ">"):
            raise BtfError("BTF of the other byte order")
        self._blob, self._order = blob, order
        self._strings = hdr_len + s_off, hdr_len + s_off + s_len
        # Where each type's record lies, by type id (from 1), and the structs with members by
        # the offset of their name: a type is unpacked only when asked for, so the kernel's
        # 125,000 types cost half a megabyte here, not tens.
        self._pos = array("I", [0])
        self._structs: Dict[int, int] = {}
        pos, end = hdr_len + t_off, hdr_len + t_off + t_len
        if end > len(blob) or self._strings[1] > len(blob):
            raise BtfError("BTF sections run past its end")
        rec = struct.Struct(order + "III")
        while pos < end:
            name_off, info, size = rec.unpack_from(blob, pos)
            kind, vlen = info >> 24 & 0x1F, info & 0xFFFF
            fixed, per = _EXTRA.get(kind, (0, 0))
            if kind == 0 or kind > ENUM64:
                raise BtfError(f"BTF type kind {kind} unknown")
            if kind == STRUCT and vlen:
                self._structs.setdefault(name_off, len(self._pos))
            self._pos.append(pos)
            pos += 12 + fixed + per * vlen

    def _name(self, off: int) -> str:
        start, end = self._strings
        if not 0 <= start + off < end:
            raise BtfError(f"BTF name offset {off} out of range")
        stop = self._blob.index(b"\0", start + off)
        return self._blob[start + off:stop].decode("ascii", errors="replace")

    def _type(self, tid: int) -> _Type:
        if not 0 < tid < len(self._pos):
            raise BtfError(f"BTF type id {tid} out of range")
        pos = self._pos[tid]
        name_off, info, size = struct.unpack_from(self._order + "III", self._blob, pos)
        return _Type(info >> 24 & 0x1F, name_off, info, size, pos + 12)

    def _name_offs(self, name: str) -> List[int]:
        """The offsets in the string section at which ``name`` is a whole string."""
        start, end = self._strings
        want = b"\0" + name.encode() + b"\0"
        out = []
        i = self._blob.find(want, start, end)
        while i >= 0:
            out.append(i + 1 - start)
            i = self._blob.find(want, i + 1, end)
        if self._blob.startswith(want[1:], start):  # the section's first string
            out.append(0)
        return out

    def _named(self, kinds: Tuple[int, ...], name: str) -> Optional[int]:
        """The first type id of one of ``kinds`` named ``name``."""
        offs = set(self._name_offs(name))
        if not offs:
            return None
        unpack, blob = struct.Struct(self._order + "II").unpack_from, self._blob
        for tid in range(1, len(self._pos)):
            name_off, info = unpack(blob, self._pos[tid])
            if name_off in offs and info >> 24 & 0x1F in kinds:
                return tid
        return None

    def _resolve(self, tid: int) -> int:
        for _ in range(32):
            t = self._type(tid)
            if t.kind not in _MODIFIERS:
                return tid
            tid = t.size_or_type
        raise BtfError("BTF type chain too long")

    def _find(self, tid: int, name: str, base: int) -> Optional[Tuple[int, int, int]]:
        """(bit offset, bitfield size, type id) of member ``name`` of struct or union ``tid``,
        looking into its anonymous members."""
        t = self._type(tid)
        kind_flag = t.info >> 31
        rec = struct.Struct(self._order + "III")
        for i in range(t.info & 0xFFFF):
            m_name, m_type, m_off = rec.unpack_from(self._blob, t.data + 12 * i)
            bits, bitfield = (m_off & 0xFFFFFF, m_off >> 24) if kind_flag else (m_off, 0)
            if m_name:
                if self._name(m_name) == name:
                    return base + bits, bitfield, m_type
                continue
            inner = self._resolve(m_type)
            if self._type(inner).kind in (STRUCT, UNION):
                found = self._find(inner, name, base + bits)
                if found is not None:
                    return found
        return None

    def typedef(self, name: str) -> int:
        """The type id of typedef ``name`` (a raw tracepoint's ``btf_trace_<name>``, the id a
        tracing program is loaded for)."""
        tid = self._named((TYPEDEF,), name)
        if tid is None:
            raise BtfError(f"BTF has no typedef {name}")
        return tid

    def func(self, name: str) -> int:
        """The type id of function ``name`` (``bpf_iter_<target>``, the id an iterator program
        is loaded for)."""
        tid = self._named((FUNC,), name)
        if tid is None:
            raise BtfError(f"BTF has no function {name}")
        return tid

    def offset(self, struct_name: str, *path: str) -> int:
        """Where ``struct_name.path[0]...`` lies, in bytes, whatever its type (an address's
        array, a structure)."""
        return self._walk(struct_name, path)[0]

    def member(self, struct_name: str, *path: str) -> Member:
        """Where ``struct_name.path[0].path[1]...`` lies; the last must be an integer (or an
        enum) that is not a bitfield."""
        what = ".".join((struct_name,) + path)
        offset, tid = self._walk(struct_name, path)
        t = self._type(tid)
        if t.kind not in (INT, ENUM, ENUM64):
            raise BtfError(f"BTF: {what} is not an integer")
        return Member(offset, t.size_or_type)

    def _walk(self, struct_name: str, path: Tuple[str, ...]) -> Tuple[int, int]:
        """(byte offset, resolved type id) of ``struct_name.path...``."""
        what = ".".join((struct_name,) + path)
        tids = [self._structs[o] for o in self._name_offs(struct_name) if o in self._structs]
        if not tids:
            raise BtfError(f"BTF has no struct {struct_name}")
        tid, offset = min(tids), 0
        for i, name in enumerate(path):
            found = self._find(tid, name, 0)
            if found is None:
                raise BtfError(f"BTF: no member {what}")
            bits, bitfield, m_type = found
            if bitfield or bits % 8:
                raise BtfError(f"BTF: {what} is a bitfield")
            offset += bits // 8
            tid = self._resolve(m_type)
            t = self._type(tid)
            if i < len(path) - 1 and t.kind not in (STRUCT, UNION):
                raise BtfError(f"BTF: {'.'.join((struct_name,) + path[:i + 1])} is not a "
                               "struct")
        return offset, tid


def load(path: str = VMLINUX) -> Btf:
    """The BTF at ``path``, read and walked (a tenth of a second or two for the kernel's
    5 MB); not kept, since a program's offsets are read from it once, at load."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise BtfError(f"{path}: {e.strerror}") from None
    return Btf(blob)
