"""Reading the exporter's own YAML files (the web config, the expected-listeners file) without
letting a hostile or broken file cost more than a bounded amount of time and memory.

PyYAML's composer and constructor recurse once per nesting level, so a file nested a few hundred
levels deep ends in ``RecursionError`` with a traceback thousands of lines long; its pure-Python
scanner takes minutes and gigabytes for a file of tens of megabytes. Both files are a few lines
in practice, so they are capped: in size before anything is parsed, and in nesting depth by one
pass over the parser's events (a state machine, not recursive) before anything is composed.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

# Deeper than any file of ours needs (the web config nests four levels, the expected-listeners
# file three) and far below what exhausts Python's recursion limit.
MAX_DEPTH = 32


class TooLarge(Exception):
    """The file is larger than the cap; nothing of it was parsed."""


def read_capped(path: str, limit: int) -> str:
    """The file's text, reading at most ``limit`` bytes plus one. Raises OSError,
    UnicodeDecodeError, or TooLarge."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"larger than {limit // 1024} KiB")
    return data.decode("utf-8")


def nesting_error(yaml: Any, text: str, max_depth: int = MAX_DEPTH
                  ) -> Optional[Tuple[Optional[int], str]]:
    """(line, message) if ``text`` nests mappings and lists deeper than ``max_depth``; None when
    it does not, or when it is not YAML at all (the loader then reports the syntax error)."""
    depth = 0
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.CollectionStartEvent):
                depth += 1
                if depth > max_depth:
                    return event.start_mark.line + 1, f"nested deeper than {max_depth} levels"
            elif isinstance(event, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError:
        return None
    return None
