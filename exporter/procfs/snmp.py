"""/proc/net/snmp and /proc/net/netstat: protocol counters in header/value line pairs.

Both files print each group as two lines, a header naming the fields and a line of values, each
starting with ``Group:`` (net/ipv4/proc.c: snmp_seq_show_ipstats, snmp_seq_show_tcp_udp,
netstat_seq_show; the MPTcpExt group comes from net/mptcp/mib.c mptcp_seq_show)::

    Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens ...
    Tcp: 1 200 120000 -1 29 ...

/proc/net/snmp holds Ip, Icmp, IcmpMsg, Tcp, Udp and UdpLite; /proc/net/netstat holds TcpExt,
IpExt and MPTcpExt. The set of fields grows with the kernel; IcmpMsg lists only the ICMP types
seen so far (icmpmsg_put in net/ipv4/proc.c), and is absent until one is. Values are decimal
and may be negative (Tcp MaxConn is printed as -1, RFC 2012's "dynamic").
"""

from __future__ import annotations

import contextlib
from functools import lru_cache
from typing import AbstractSet, Dict, FrozenSet, Optional, Tuple

from exporter.procfs import read_required
from exporter.procfs.errors import ParseError

# group -> field -> value, in file order.
Groups = Dict[str, Dict[str, int]]


def parse_snmp(text: str, path: str, groups: Optional[AbstractSet[str]] = None,
               fields: Optional[AbstractSet[str]] = None) -> Groups:
    """Parse header/value line pairs. Raises ParseError naming the line for a header without a
    value line, a group name that changes between the two lines, a field/value count mismatch,
    or a value that is not a decimal integer. With ``groups``, only those groups are parsed (and
    checked); the others are skipped two lines at a time, and with ``fields`` only those fields
    are converted: what makes reading a few counters of many namespaces cheap."""
    out: Groups = {}
    lines = text.splitlines()
    n = 0
    while n < len(lines):
        header = lines[n]
        if not header.strip():
            n += 1
            continue
        group, sep, names = header.partition(":")
        if not sep or not group or " " in group.strip():
            raise ParseError(path, "expected a 'Group: Field ...' header line", n + 1)
        group = group.strip()
        if groups is not None and group not in groups:
            n += 2
            continue
        if n + 1 >= len(lines) or not lines[n + 1].strip():
            raise ParseError(path, f"header of {group} has no value line", n + 1)
        vgroup, vsep, values = lines[n + 1].partition(":")
        if not vsep or vgroup.strip() != group:
            raise ParseError(path, f"expected the value line of {group}, got "
                                   f"{lines[n + 1][:40]!r}", n + 2)
        names_, nums = names.split(), values.split()
        if len(names_) != len(nums):
            raise ParseError(path, f"{group} has {len(names_)} fields but {len(nums)} values",
                             n + 2)
        row: Optional[Dict[str, int]] = None
        if fields is None:
            with contextlib.suppress(ValueError):  # the loop below names the field
                row = dict(zip(names_, map(int, nums)))
        if row is None:
            row = {}
            for f, v in zip(names_, nums):
                if fields is not None and f not in fields:
                    continue
                try:
                    row[f] = int(v)
                except ValueError:
                    raise ParseError(path, f"value of {group} {f} is not a number: {v!r}",
                                     n + 2) from None
        if group in out:
            raise ParseError(path, f"group {group} appears twice", n + 1)
        out[group] = row
        n += 2
    return out


@lru_cache(maxsize=64)
def _positions(header: bytes, fields: FrozenSet[str]) -> Tuple[int, Tuple[Tuple[str, int], ...]]:
    """(number of fields, (field, index) of each wanted one) of a header line: the header of a
    group is the same in every namespace of a kernel, so it is split once."""
    names = header.decode("ascii", "replace").split()
    return len(names), tuple((f, i) for i, f in enumerate(names) if f in fields)


def parse_group(data: bytes, path: str, group: str,
                fields: FrozenSet[str]) -> Optional[Dict[str, int]]:
    """``fields`` of one group of the raw content of /proc/net/snmp or netstat; None when it
    has no such group. What :func:`parse_snmp` checks of that group is checked here too (value
    line present and of the same group, as many values as fields, decimal values), at the cost
    of one split of the value line: the way to read a few counters of many namespaces."""
    tag = group.encode("ascii") + b":"
    if data.startswith(tag):
        start = 0
    else:
        start = data.find(b"\n" + tag) + 1
        if start == 0:
            return None
    line_no = data.count(b"\n", 0, start) + 1
    end = data.find(b"\n", start)
    if end < 0:
        raise ParseError(path, f"header of {group} has no value line", line_no)
    vend = data.find(b"\n", end + 1)
    values = data[end + 1:vend if vend >= 0 else len(data)]
    if not values.strip():
        raise ParseError(path, f"header of {group} has no value line", line_no)
    if not values.startswith(tag):
        shown = values[:40].decode("ascii", "replace")
        raise ParseError(path, f"expected the value line of {group}, got {shown!r}",
                         line_no + 1)
    count, wanted = _positions(data[start + len(tag):end], fields)
    nums = values[len(tag):].split()
    if len(nums) != count:
        raise ParseError(path, f"{group} has {count} fields but {len(nums)} values", line_no + 1)
    try:
        return {f: int(nums[i]) for f, i in wanted}
    except ValueError:
        f, v = next((f, nums[i].decode("ascii", "replace")) for f, i in wanted
                    if not nums[i].lstrip(b"-").isdigit())
        raise ParseError(path, f"value of {group} {f} is not a number: {v!r}",
                         line_no + 1) from None


def _read(root: str, name: str, groups: Optional[AbstractSet[str]],
          fields: Optional[AbstractSet[str]]) -> Optional[Groups]:
    if groups is None and fields is None:
        return read_required(root, parse_snmp, "net", name)
    return read_required(root, lambda text, path: parse_snmp(text, path, groups, fields),
                         "net", name)


def read_snmp(root: str, groups: Optional[AbstractSet[str]] = None,
              fields: Optional[AbstractSet[str]] = None) -> Optional[Groups]:
    """``<root>/net/snmp`` (only ``groups`` and ``fields`` of it when given); ParseError when
    missing (every Linux has it), None off Linux."""
    return _read(root, "snmp", groups, fields)


def read_netstat(root: str, groups: Optional[AbstractSet[str]] = None,
                 fields: Optional[AbstractSet[str]] = None) -> Optional[Groups]:
    """``<root>/net/netstat`` (only ``groups`` and ``fields`` of it when given); ParseError
    when missing (every Linux has it), None off Linux."""
    return _read(root, "netstat", groups, fields)
