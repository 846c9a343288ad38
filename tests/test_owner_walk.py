"""The owner walk on a host where programs start and exit all the time: a socket whose process
exited between the listing and the walk is not looked for in every process."""

from __future__ import annotations

import os
import shutil
from typing import List, Set

import pytest
from helpers import FIXTURES

from exporter.listeners import owners


def _tree(tmp_path: os.PathLike[str]) -> str:
    dst = os.path.join(str(tmp_path), "proc")
    shutil.copytree(os.path.join(FIXTURES, "listeners", "proc"), dst, symlinks=True)
    os.makedirs(os.path.join(dst, "2", "fd"), exist_ok=True)  # git holds no empty directory
    return dst


GONE = 987654321  # a socket no process holds: its holder has exited


def test_closed_socket_is_not_looked_for_in_every_process(
        tmp_path: os.PathLike[str], monkeypatch: pytest.MonkeyPatch) -> None:
    # The fixture has 7 processes; a host has hundreds, more than RECHECK_AFTER.
    monkeypatch.setattr(owners, "RECHECK_AFTER", 2)
    proc = _tree(tmp_path)
    asked: List[Set[int]] = []

    def still_open(inodes: Set[int]) -> Set[int]:
        asked.append(set(inodes))
        return set()

    cache = owners.OwnerCache(proc)
    assert cache.owners({GONE}, still_open) == {GONE: []}
    assert asked == [{GONE}]
    assert cache.stats.closed == 1 and cache.stats.walked_processes == 0


def test_open_socket_without_holder_is_still_looked_for_everywhere(
        tmp_path: os.PathLike[str]) -> None:
    """A socket that exists but whose holder is far down the list (systemd's, passed to a
    service) is searched for in every process, as without the question."""
    proc = _tree(tmp_path)
    every = owners.OwnerCache(proc)
    every.owners({GONE})
    cache = owners.OwnerCache(proc)
    assert cache.owners({GONE}, lambda inodes: inodes) == {GONE: []}
    assert cache.stats.closed == 0
    assert cache.stats.walked_processes == every.stats.walked_processes > 0


def test_short_walk_asks_nothing(tmp_path: os.PathLike[str]) -> None:
    """Fewer processes than RECHECK_AFTER: reading them all is as cheap as asking."""
    proc = _tree(tmp_path)
    asked: List[Set[int]] = []
    cache = owners.OwnerCache(proc)
    cache.owners({GONE}, lambda inodes: asked.append(inodes) or set())  # type: ignore[func-returns-value]
    assert asked == [] and cache.stats.walked_processes > 0
