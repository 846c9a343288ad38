"""exporter.procfs.reread: /proc files kept open and read again from offset 0 give what a fresh
open gives; the descriptor budget holds; sweeping closes what is no longer wanted."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import List

import pytest
from helpers import connect_and_close

from exporter.procfs import read_bytes
from exporter.procfs.reread import HeldFiles, pread_all


def _active_opens(text: bytes) -> int:
    lines = [ln.split() for ln in text.decode().splitlines() if ln.startswith("Tcp:")]
    return int(lines[1][lines[0].index("ActiveOpens")])


def _own_fds() -> List[str]:
    return os.listdir("/proc/self/fd")


def test_a_kept_proc_file_reads_the_current_content() -> None:
    files = HeldFiles(["snmp", "netstat"], max_fds=10)
    first = files.read("me", "/proc/self/net")
    assert files.fds == 2
    connect_and_close(3)
    again = files.read("me", "/proc/self/net")
    assert files.fds == 2  # the same descriptors
    assert _active_opens(again[0] or b"") - _active_opens(first[0] or b"") >= 3
    # The same text a fresh open gives (the netstat groups, names and count of values).
    fresh = read_bytes("/proc/self/net/netstat").split(b"\n")
    kept = (files.read("me", "/proc/self/net")[1] or b"").split(b"\n")
    assert [ln.split()[0] for ln in kept if ln] == [ln.split()[0] for ln in fresh if ln]
    files.close()
    assert files.fds == 0


def test_longer_than_one_read(tmp_path: Path) -> None:
    big = b"x" * (200 * 1024 + 17)
    (tmp_path / "big").write_bytes(big)
    fd = os.open(tmp_path / "big", os.O_RDONLY)
    try:
        assert pread_all(fd) == big
        assert pread_all(fd) == big  # again from the start
    finally:
        os.close(fd)
    files = HeldFiles(["big"], max_fds=1)
    assert files.read("k", str(tmp_path)) == [big]
    assert files.read("k", str(tmp_path)) == [big]
    files.close()


def test_missing_files_are_none_and_nothing_is_kept_of_a_gone_directory(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"1\n")
    files = HeldFiles(["a", "absent"], max_fds=10)
    assert files.read("k", str(tmp_path)) == [b"1\n", None]
    assert files.fds == 1
    files.close()
    # A process that exited: its net/ is gone, every file reads as absent, nothing is kept
    # (its user tells "gone" from "no such file" by net/snmp, which every Linux has).
    gone = HeldFiles(["a"], max_fds=10)
    assert gone.read("k", str(tmp_path / "nothing-here")) == [None]
    assert gone.fds == 0 and len(gone) == 0


def test_budget_is_kept_and_reads_go_on_beyond_it(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).write_bytes(name.encode())
    before = len(_own_fds())
    files = HeldFiles(["a", "b"], max_fds=3)
    assert files.read(1, str(tmp_path)) == [b"a", b"b"]
    assert files.read(2, str(tmp_path)) == [b"a", b"b"]  # would make 4: read, not kept
    assert files.fds == 2 and len(files) == 1
    assert len(_own_fds()) == before + 2
    files.close()
    assert len(_own_fds()) == before


def test_sweep_closes_what_is_no_longer_found(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"a")
    before = len(_own_fds())
    files = HeldFiles(["a"], max_fds=10)
    for k in range(3):
        files.read(k, str(tmp_path))
    assert len(_own_fds()) == before + 3
    files.sweep([1])
    assert len(files) == 1 and files.fds == 1
    assert len(_own_fds()) == before + 1
    files.sweep([])
    assert len(_own_fds()) == before


# --- the exporter's own /proc/net and /proc/sys files ------------------------------------


def test_only_a_live_procfs_of_this_process_is_kept(tmp_path: Path) -> None:
    from helpers import FIXTURES

    from exporter.procfs import own_files

    assert own_files.is_own_procfs("/proc")
    assert not own_files.is_own_procfs(os.path.join(FIXTURES, "proc", "new"))
    assert not own_files.is_own_procfs(str(tmp_path))


def test_kept_files_read_afresh_through_one_descriptor() -> None:
    from exporter.procfs import own_files, read_text

    own_files.close_all()
    try:
        first = read_text("/proc", "net", "snmp")  # not kept yet: a fresh read
        assert not own_files._fds
        own_files.keep("/proc")
        before = len(_own_fds())
        read_text("/proc", "net", "snmp")
        assert len(_own_fds()) == before + 1
        connect_and_close(3)
        again = read_text("/proc", "net", "snmp")
        assert len(_own_fds()) == before + 1  # the same descriptor, read again
        assert _active_opens(again.encode()) - _active_opens(first.encode()) >= 3
        # Per-process files and other directories are never kept.
        read_text("/proc", "self", "stat")
        assert len(_own_fds()) == before + 1
        # A file that does not exist is not kept, and raises as a fresh read does.
        with pytest.raises(FileNotFoundError):
            read_text("/proc", "net", "no-such-file")
        assert len(_own_fds()) == before + 1
    finally:
        own_files.close_all()


@pytest.mark.serial  # the host's /proc/net/tcp, read twice, differs by two lines at most
def test_a_kept_file_of_many_records_is_read_whole() -> None:
    """/proc/net/tcp comes one seq_file buffer (a page) per read: a short read is not its
    end, read again from offset 0 or not."""
    from exporter.procfs import own_files, read_bytes, read_text

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)
    conns = [socket.create_connection(srv.getsockname()) for _ in range(40)]
    try:
        fresh = read_bytes("/proc/self/net/tcp").decode()
        assert len(fresh) > 3 * 4096
        own_files.close_all()
        own_files.keep("/proc")
        for _ in range(2):
            text = read_text("/proc", "net", "tcp")
            assert abs(len(text.splitlines()) - len(fresh.splitlines())) <= 2
            assert len(text.splitlines()) > 40
        fd = os.open("/proc/self/net/tcp", os.O_RDONLY)
        try:
            assert len(pread_all(fd).splitlines()) > 40
            assert len(pread_all(fd).splitlines()) > 40
        finally:
            os.close(fd)
    finally:
        own_files.close_all()
        for c in conns:
            c.close()
        srv.close()


def test_the_netns_counter_files_come_whole_in_one_read() -> None:
    """Tier 1 reads its four files with one pread each (HeldFiles(single_record=True)): each is
    printed by a single show(), so one read gives what reading to the end gives."""
    from exporter.procfs.namespace_counters import COUNTER_FILES

    files = HeldFiles(COUNTER_FILES, max_fds=10, single_record=True)
    try:
        for _ in range(2):  # opened, then kept
            got = files.read("me", "/proc/self/net")
            for name, data in zip(COUNTER_FILES, got):
                whole = read_bytes(f"/proc/self/net/{name}")
                assert data is not None
                # Counters may move between the two reads; the lines and fields may not.
                assert [ln.split()[:2] for ln in data.splitlines()] == \
                    [ln.split()[:2] for ln in whole.splitlines()], name
                assert len(data.split()) == len(whole.split()), name
    finally:
        files.close()


def test_files_printed_whole_take_one_read_sized_to_them(monkeypatch: pytest.MonkeyPatch) -> None:
    """A sysctl and the counters files of net/ come whole in one pread into a buffer sized to
    them (a sysctl read allocates what is asked: 64 KiB for a six-byte value); a file larger
    than the first buffer is read again whole into a larger one (the first buffer is made 4
    bytes here, so that all of them are); net/dev, of many records, is still read to its end."""
    from exporter.procfs import own_files, read_text

    reads: List[int] = []
    real = os.pread

    def counting(fd: int, n: int, off: int) -> bytes:
        reads.append(n)
        return real(fd, n, off)

    own_files.close_all()
    try:
        own_files.keep("/proc")
        monkeypatch.setattr(own_files, "FIRST_SIZE", 4)
        monkeypatch.setattr(os, "pread", counting)
        for parts in (("sys", "net", "core", "somaxconn"), ("net", "snmp"), ("net", "snmp6"),
                      ("net", "netstat")):
            whole = read_bytes(os.path.join("/proc", *parts)).decode()
            counts = []
            for _ in range(2):  # opened, then kept with its size
                reads.clear()
                text = read_text("/proc", *parts)
                counts.append(len(reads))
                assert [ln.split()[:1] for ln in text.splitlines()] == \
                    [ln.split()[:1] for ln in whole.splitlines()], parts
            # The first read doubled its way up from 4 bytes; the second is one pread,
            # bigger than the file and smaller than 64 KiB.
            assert counts[0] > 1 and len(whole) > 4, parts
            assert counts[1] == 1 and len(text) < reads[0] < 1 << 16, (parts, reads)
        reads.clear()
        read_text("/proc", "net", "dev")
        assert len(reads) >= 2  # read until an empty read
    finally:
        own_files.close_all()


def test_held_files_printed_whole_grow_their_buffer(tmp_path: Path) -> None:
    """A held file printed whole that is larger than the first buffer comes whole, then with
    one read into the buffer that held it."""
    big = b"x" * 10000 + b"\n"
    (tmp_path / "a").write_bytes(big)
    files = HeldFiles(["a"], max_fds=4, single_record=True)
    try:
        assert files.read("k", str(tmp_path)) == [big]
        assert files._sizes == [16384]
        assert files.read("k", str(tmp_path)) == [big]
    finally:
        files.close()
