"""A network namespace's TCP counters and socket totals, from the four files of
``/proc/<pid>/net`` that show the namespace of <pid>: snmp (group Tcp), netstat (TcpExt),
sockstat and sockstat6.

Only the rows of sockstat that count the namespace's own sockets are read (``sockets: used``
and the per-protocol rows): ``orphan``, ``alloc`` and ``mem`` are host-wide, and summed over
namespaces they would count the host many times. Reading needs no capability (about 0.15 ms a
namespace, whatever its socket count); the files may be held open and read again from offset 0
(:class:`exporter.procfs.reread.HeldFiles`), so parsing takes their contents.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import AbstractSet, Dict, List, Optional, Sequence

from exporter.procfs import ENCODING, ERRORS, read_bytes, snmp
from exporter.procfs.errors import ParseError
from exporter.procfs.sockstat import Sockstat, parse_sockstat

# What is read of each namespace, in its net/ directory, in this order.
COUNTER_FILES = ("snmp", "netstat", "sockstat", "sockstat6")
_SOCKSTAT4 = frozenset({"sockets", "TCP", "UDP"})
_SOCKSTAT6 = frozenset({"TCP6", "UDP6"})


@dataclass
class NamespaceCounters:
    tcp: Dict[str, int]  # the asked-for fields of the Tcp group of net/snmp
    tcp_ext: Dict[str, int]  # and of the TcpExt group of net/netstat
    sockstat: Optional[Sockstat]
    sockstat6: Optional[Sockstat]


def parse_counters(texts: Sequence[Optional[bytes]], directory: str,
                   tcp_fields: AbstractSet[str], tcp_ext_fields: AbstractSet[str]
                   ) -> Optional[NamespaceCounters]:
    """The ``tcp_fields`` of Tcp, the ``tcp_ext_fields`` of TcpExt and the sockstat rows from
    the contents of :data:`COUNTER_FILES` (None for a file that is absent) of one namespace's
    ``directory`` (its net/); None when net/snmp is absent: the process exited (or is a zombie,
    whose net/ is empty) while being read."""
    snmp_text, netstat_text, sockstat_text, sockstat6_text = texts
    if snmp_text is None:
        return None
    tcp = snmp.parse_group(snmp_text, f"{directory}/snmp", "Tcp", frozenset(tcp_fields))
    if tcp is None:
        raise ParseError(f"{directory}/snmp", "no Tcp group")
    if netstat_text is None:
        raise ParseError(f"{directory}/netstat", "missing, though every Linux kernel has it")
    tcp_ext = snmp.parse_group(netstat_text, f"{directory}/netstat", "TcpExt",
                               frozenset(tcp_ext_fields))
    return NamespaceCounters(
        tcp, tcp_ext or {},
        None if sockstat_text is None else parse_sockstat(
            sockstat_text.decode(ENCODING, ERRORS), f"{directory}/sockstat", _SOCKSTAT4),
        None if sockstat6_text is None else parse_sockstat(
            sockstat6_text.decode(ENCODING, ERRORS), f"{directory}/sockstat6", _SOCKSTAT6))


def read_counters(root: str, tcp_fields: AbstractSet[str], tcp_ext_fields: AbstractSet[str]
                  ) -> Optional[NamespaceCounters]:
    """:func:`parse_counters` of the namespace that ``root`` (a /proc/<pid> directory, or
    /proc/thread-self after setns) shows; None when the process is gone."""
    directory = os.path.join(root, "net")
    texts: List[Optional[bytes]] = []
    for name in COUNTER_FILES:
        try:
            texts.append(read_bytes(os.path.join(directory, name)))
        except FileNotFoundError:
            texts.append(None)
    return parse_counters(texts, directory, tcp_fields, tcp_ext_fields)
