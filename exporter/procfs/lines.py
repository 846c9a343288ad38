"""The loop the line-oriented /proc tables share: numbered, non-blank lines split into fields.

Line numbers are 1-based, as :class:`~exporter.procfs.errors.ParseError` reports them, and
count the blank lines that are skipped, so an error points at the line an editor shows.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, List, Tuple

from exporter.procfs.errors import ParseError


def rows(lines: Iterable[str], start: int = 1,
         maxsplit: int = -1) -> Iterator[Tuple[int, List[str]]]:
    """(line number, fields split on white space at most ``maxsplit`` times) of each line that
    is not blank, the first line numbered ``start``."""
    for n, line in enumerate(lines, start=start):
        f = line.split(None, maxsplit)
        if f:
            yield n, f


def table(lines: Iterable[str], path: str, is_header: Callable[[str], bool],
          maxsplit: int = -1) -> Iterator[Tuple[int, List[str]]]:
    """:func:`rows` of a table whose first line is its header: nothing for an empty file (seen
    on kernels with the protocol compiled out), a ParseError for a first line ``is_header``
    refuses."""
    it = iter(lines)
    header = next(it, None)
    if header is None:
        return
    if not is_header(header):
        raise ParseError(path, "missing header line", 1)
    yield from rows(it, 2, maxsplit)
