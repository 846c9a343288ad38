"""bpf(2), perf_event_open(2) and the perf ioctls through ctypes, for what the exporter's
programs need: array and hash maps, shared or per CPU (a shared array map can be mapped into
memory; a per-CPU map is read with one value per possible CPU for each key), a tracepoint
program loaded with the verifier's log kept for the error, and its attachment to a classic
tracepoint through a perf event.

Every object is a file descriptor (the kernel opens bpf and perf descriptors close-on-exec);
nothing is pinned in bpffs, so closing the descriptors, or the process ending in any way,
detaches and unloads everything.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import mmap
import os
import platform
import struct
import threading
from typing import Dict, List, Optional, Tuple

# System call numbers (bpf, perf_event_open) per machine.
_NR: Dict[str, Tuple[int, int]] = {
    "x86_64": (321, 298), "aarch64": (280, 241), "armv7l": (386, 364), "armv6l": (386, 364),
    "ppc64le": (361, 319), "s390x": (351, 331), "riscv64": (280, 241), "i686": (357, 336),
    "i386": (357, 336), "loongarch64": (280, 241),
}

# enum bpf_cmd
MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 0, 1, 2, 3, 4
PROG_LOAD = 5
PROG_GET_NEXT_ID = 11
RAW_TRACEPOINT_OPEN = 17
MAP_LOOKUP_BATCH = 24
LINK_CREATE = 28
ITER_CREATE = 33
# enum bpf_map_type, bpf_prog_type
MAP_TYPE_HASH, MAP_TYPE_ARRAY, MAP_TYPE_PERCPU_HASH, MAP_TYPE_PERCPU_ARRAY = 1, 2, 5, 6
MAP_TYPE_LRU_HASH = 9
PROG_TYPE_TRACEPOINT, PROG_TYPE_TRACING = 5, 26
# enum bpf_attach_type: a tracing program on a raw tracepoint, arguments typed by BTF; a
# program run by a BPF iterator (bpf_iter) for every object it walks
TRACE_RAW_TP = 23
TRACE_ITER = 28
# map_flags
F_NO_PREALLOC, F_MMAPABLE = 1 << 0, 1 << 10
# update flags
ANY, NOEXIST, EXIST = 0, 1, 2

PERF_TYPE_TRACEPOINT = 2
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
_PERF_ATTR_SIZE = 128

_ATTR_SIZE = 160  # bytes of union bpf_attr this code fills (the kernel checks the rest is 0)
_LOG_SIZE = 1 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    """A bpf() or perf call failed. ``log`` holds the verifier's log for a refused program."""

    def __init__(self, err: int, what: str, log: str = "") -> None:
        super().__init__(err, os.strerror(err))
        self.what = what
        self.log = log

    def __str__(self) -> str:
        return f"{self.what}: {self.strerror}"


def _numbers() -> Tuple[int, int]:
    nr = _NR.get(platform.machine())
    if nr is None:
        raise BpfError(errno.ENOSYS, f"bpf() on {platform.machine()} (no system call number "
                                     "known)")
    return nr


def bpf(cmd: int, attr: ctypes.Array, what: str) -> int:  # type: ignore[type-arg]
    r = _libc.syscall(_numbers()[0], ctypes.c_int(cmd), attr, ctypes.c_uint(ctypes.sizeof(attr)))
    if r < 0:
        raise BpfError(ctypes.get_errno(), what)
    return int(r)


def _attr(*fields: Tuple[int, str, int]) -> ctypes.Array:  # type: ignore[type-arg]
    buf = ctypes.create_string_buffer(_ATTR_SIZE)
    for off, fmt, value in fields:
        struct.pack_into("=" + fmt, buf, off, value)
    return buf


def _addr(obj: ctypes._CData) -> int:
    return ctypes.addressof(obj)


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
               flags: int = 0, name: str = "") -> int:
    buf = _attr((0, "I", map_type), (4, "I", key_size), (8, "I", value_size),
                (12, "I", max_entries), (16, "I", flags))
    raw = name.encode()[:15]
    ctypes.memmove(ctypes.addressof(buf) + 28, raw, len(raw))  # map_name
    return bpf(MAP_CREATE, buf, f"creating BPF map {name or map_type}")


def map_update(fd: int, key: bytes, value: bytes, flags: int = ANY) -> None:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value, len(value))
    bpf(MAP_UPDATE_ELEM, _attr((0, "I", fd), (8, "Q", _addr(k)), (16, "Q", _addr(v)),
                               (24, "Q", flags)), "updating a BPF map element")


def map_lookup(fd: int, key: bytes, value_size: int) -> Optional[bytes]:
    k = ctypes.create_string_buffer(key, len(key))
    v = ctypes.create_string_buffer(value_size)
    try:
        bpf(MAP_LOOKUP_ELEM, _attr((0, "I", fd), (8, "Q", _addr(k)), (16, "Q", _addr(v))),
            "looking up a BPF map element")
    except BpfError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    return v.raw


class BatchReader:
    """Reads every element of a map with BPF_MAP_LOOKUP_BATCH (Linux 5.6 for hash maps, 5.7
    for arrays), buffers allocated once: usually one system call for the whole map. For a
    per-CPU map give ``cpus`` (:func:`possible_cpus`): each key's value is then ``cpus``
    values, each rounded up to 8 bytes, one after the other (kernel/bpf/syscall.c,
    bpf_map_value_size)."""

    def __init__(self, fd: int, key_size: int, value_size: int, max_entries: int,
                 cpus: int = 1) -> None:
        self.fd, self.key_size = fd, key_size
        self.value_size = value_size if cpus == 1 else ((value_size + 7) & ~7) * cpus
        self.max = max_entries
        self.keys = ctypes.create_string_buffer(key_size * max_entries)
        self.values = ctypes.create_string_buffer(self.value_size * max_entries)
        # in_batch/out_batch tokens: a hash map's token is a bucket number, an array's an
        # index (4 bytes); 8 are kept for any map type.
        self.token_in = ctypes.create_string_buffer(8)
        self.token_out = ctypes.create_string_buffer(8)

    def read_raw(self) -> Tuple[int, bytes, bytes]:
        """(number of elements, their keys, their values), keys and values each in one
        string of fixed-size records."""
        n_all, keys, values = 0, [], []
        first = True
        ks, vs = self.key_size, self.value_size
        while True:
            attr = _attr((0, "Q", 0 if first else _addr(self.token_in)),
                         (8, "Q", _addr(self.token_out)), (16, "Q", _addr(self.keys)),
                         (24, "Q", _addr(self.values)), (32, "I", self.max),
                         (36, "I", self.fd))
            done = False
            try:
                bpf(MAP_LOOKUP_BATCH, attr, "reading a BPF map")
            except BpfError as e:
                if e.errno != errno.ENOENT:
                    raise
                done = True
            n = struct.unpack_from("=I", attr, 32)[0]
            if n:
                n_all += n
                keys.append(ctypes.string_at(self.keys, n * ks))
                values.append(ctypes.string_at(self.values, n * vs))
            if done or n == 0:
                return n_all, b"".join(keys), b"".join(values)
            ctypes.memmove(self.token_in, self.token_out, 8)
            first = False

    def read(self) -> List[Tuple[bytes, bytes]]:
        n, keys, values = self.read_raw()
        ks, vs = self.key_size, self.value_size
        return [(keys[i * ks:(i + 1) * ks], values[i * vs:(i + 1) * vs]) for i in range(n)]


def possible_cpus(path: str = "/sys/devices/system/cpu/possible") -> int:
    """How many values a per-CPU map holds per key: the kernel's num_possible_cpus(), counted
    from the list of possible CPUs (``0-3``, or ``0,2-5`` for five)."""
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
        n = 0
        for part in text.split(","):
            lo, _, hi = part.partition("-")
            n += int(hi or lo) - int(lo) + 1
        if n > 0:
            return n
    except (OSError, ValueError):
        pass
    return os.cpu_count() or 1


def prog_load(prog_type: int, insns: bytes, license: str = "GPL", name: str = "",
              attach_type: int = 0, attach_btf_id: int = 0) -> int:
    """Load a program; on refusal raise BpfError with the verifier's log. A tracing program
    names what it attaches to: ``attach_type`` and the BTF id of its target in the kernel's
    BTF (``attach_btf_id``)."""
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())

    def load(log_level: int, log: Optional[ctypes.Array]) -> int:  # type: ignore[type-arg]
        buf = _attr((0, "I", prog_type), (4, "I", len(insns) // 8), (8, "Q", _addr(code)),
                    (16, "Q", _addr(lic)), (24, "I", log_level),
                    (28, "I", ctypes.sizeof(log) if log is not None else 0),
                    (32, "Q", _addr(log) if log is not None else 0),
                    (68, "I", attach_type), (108, "I", attach_btf_id))
        raw = name.encode()[:15]
        ctypes.memmove(ctypes.addressof(buf) + 48, raw, len(raw))  # prog_name
        return bpf(PROG_LOAD, buf, f"loading BPF program {name}")

    try:
        return load(0, None)
    except BpfError as e:
        if e.errno != errno.EACCES and e.errno != errno.EINVAL:
            raise
    log = ctypes.create_string_buffer(_LOG_SIZE)
    try:
        return load(1, log)  # a second try only to get the verifier's reasons
    except BpfError as e:
        e.log = log.value.decode(errors="replace")
        raise


def perf_event_open_tracepoint(tp_id: int, cpu: int) -> int:
    attr = ctypes.create_string_buffer(_PERF_ATTR_SIZE)
    struct.pack_into("=IIQQQ", attr, 0, PERF_TYPE_TRACEPOINT, _PERF_ATTR_SIZE, tp_id, 1,
                     PERF_SAMPLE_RAW)
    struct.pack_into("=I", attr, 48, 1)  # wakeup_events
    r = _libc.syscall(_numbers()[1], attr, ctypes.c_int(-1), ctypes.c_int(cpu),
                      ctypes.c_int(-1), ctypes.c_ulong(PERF_FLAG_FD_CLOEXEC))
    if r < 0:
        raise BpfError(ctypes.get_errno(), f"opening a perf event for tracepoint {tp_id}")
    return int(r)


def attach(perf_fd: int, prog_fd: int) -> None:
    """Run program ``prog_fd`` on every hit of the perf event's tracepoint, on every CPU (the
    program is attached to the tracepoint, not to the event's CPU), then enable the event."""
    _libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong)
    if _libc.ioctl(perf_fd, PERF_EVENT_IOC_SET_BPF, prog_fd) != 0:
        raise BpfError(ctypes.get_errno(), "attaching a BPF program to a tracepoint")
    if _libc.ioctl(perf_fd, PERF_EVENT_IOC_ENABLE, 0) != 0:
        raise BpfError(ctypes.get_errno(), "enabling a tracepoint's perf event")


def raw_tracepoint_open(prog_fd: int) -> int:
    """Attach a tracing program loaded for a raw tracepoint (BPF_TRACE_RAW_TP, Linux 5.5) to
    the tracepoint it was loaded for; the descriptor returned holds the attachment."""
    return bpf(RAW_TRACEPOINT_OPEN, _attr((0, "Q", 0), (8, "I", prog_fd)),
               "attaching to a raw tracepoint")


def iter_link(prog_fd: int) -> int:
    """Link a program loaded for an iterator (BPF_TRACE_ITER, Linux 5.8) to it; the link's
    descriptor is what :func:`iter_create` opens runs of the iterator from."""
    return bpf(LINK_CREATE, _attr((0, "I", prog_fd), (8, "I", TRACE_ITER)),
               "linking a BPF iterator program")


def iter_create(link_fd: int) -> int:
    """One run of an iterator: reading the descriptor to its end runs the program once per
    object, in the network namespace of the calling thread (for the socket iterators)."""
    return bpf(ITER_CREATE, _attr((0, "I", link_fd)), "creating a BPF iterator")


def run_iterator(link_fd: int, max_reads: int) -> bool:
    """One run of an iterator whose program writes nothing: read its descriptor to the end.
    The kernel pauses a run every million objects without output (MAX_ITER_OBJECTS,
    kernel/bpf/bpf_iter.c) with EAGAIN, and the next read goes on from there. False when
    the run did not end in ``max_reads`` reads."""
    fd = iter_create(link_fd)
    try:
        for _ in range(max_reads):
            try:
                if not os.read(fd, 4096):
                    return True
            except BlockingIOError:
                continue
        return False
    finally:
        close(fd)


def mmap_array(fd: int, value_size: int, max_entries: int, writable: bool = False) -> mmap.mmap:
    """Map a BPF_F_MMAPABLE array into memory (elements are ``value_size`` rounded up to 8)."""
    stride = (value_size + 7) & ~7
    size = stride * max_entries
    page = mmap.PAGESIZE
    size = (size + page - 1) // page * page
    prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    return mmap.mmap(fd, size, flags=mmap.MAP_SHARED, prot=prot)


class Owned:
    """The descriptors of one loaded program and its maps, and the memory of its mapped array
    (``_blob_view``), released together by :meth:`close`. A subclass builds itself with
    :meth:`_own` and :meth:`_map`, and calls :meth:`close` if building fails half-way; readers
    hold ``_lock`` and refuse to run once ``_closed``."""

    def __init__(self) -> None:
        self._fds: List[int] = []
        self._mem: Optional[mmap.mmap] = None
        self._lock = threading.Lock()
        self._closed = False

    def _own(self, fd: int) -> int:
        self._fds.append(fd)
        return fd

    def _map(self, fd: int, value_size: int) -> memoryview:
        """A one-element mmapable array's memory, released by close()."""
        self._mem = mmap_array(fd, value_size, 1, writable=True)
        self._blob_view = memoryview(self._mem)
        return self._blob_view

    def close(self) -> None:
        if not self._closed and self._mem is not None:
            self._blob_view.release()
            self._mem.close()
        self._closed = True
        for fd in self._fds:
            close(fd)
        self._fds = []


def fdinfo(fd: int, pid: str = "self") -> Dict[str, str]:
    """/proc/<pid>/fdinfo/<fd> as a dict (a program's prog_id, run_cnt, recursion_misses)."""
    out: Dict[str, str] = {}
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii", errors="replace") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k.strip()] = v.strip()
    except OSError:
        pass
    return out


def prog_ids() -> List[int]:
    """The ids of every BPF program loaded on the host (needs CAP_SYS_ADMIN)."""
    ids: List[int] = []
    start = 0
    while True:
        attr = _attr((0, "I", start))
        try:
            bpf(PROG_GET_NEXT_ID, attr, "listing BPF programs")
        except BpfError as e:
            if e.errno == errno.ENOENT:
                return ids
            raise
        start = struct.unpack_from("=I", attr, 4)[0]
        ids.append(start)


CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 21, 38, 39


def effective_caps(status: str = "/proc/self/status") -> Optional[int]:
    """The calling process's effective capability set, or None if it cannot be read."""
    try:
        with open(status, encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError, IndexError):
        pass
    return None


def missing_caps(caps: Optional[int]) -> str:
    """What the process lacks to load and attach tracing programs, or "" (CAP_SYS_ADMIN alone
    does, as before Linux 5.8; CAP_BPF with CAP_PERFMON since)."""
    if caps is None or caps >> CAP_SYS_ADMIN & 1:
        return ""
    lacking = [n for b, n in ((CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"))
               if not caps >> b & 1]
    return " and ".join(lacking)


def close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
