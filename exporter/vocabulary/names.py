"""The one table of socket state names, address families and protocols.

Every collector that names a socket state, family or protocol takes it from here, and every
source (netlink sock_diag, /proc/net, psutil) reports states as the kernel's numbers from
include/net/tcp_states.h, so a name is decided in one place.
"""

from __future__ import annotations

import socket
from typing import Dict, List, Tuple

# Kernel socket states, include/net/tcp_states.h.
TCP_ESTABLISHED, TCP_SYN_SENT, TCP_SYN_RECV, TCP_FIN_WAIT1, TCP_FIN_WAIT2 = 1, 2, 3, 4, 5
TCP_TIME_WAIT, TCP_CLOSE, TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_LISTEN, TCP_CLOSING = 6, 7, 8, 9, 10, 11
TCP_NEW_SYN_RECV, TCP_BOUND_INACTIVE = 12, 13

# The states named as ss names them, in lower snake case.
TCP_STATES: Dict[int, str] = {
    1: "established", 2: "syn_sent", 3: "syn_recv", 4: "fin_wait1", 5: "fin_wait2",
    6: "time_wait", 7: "close", 8: "close_wait", 9: "last_ack", 10: "listen", 11: "closing",
    12: "new_syn_recv", 13: "bound_inactive",
}
# Always emitted, zero included. new_syn_recv is internal: inet_diag reports request sockets as
# syn_recv. bound_inactive (13) is only a request bit: since Linux 6.5 asking for it makes
# inet_diag walk the bind hash too, and the bound-but-idle sockets found there are reported with
# their real state, TCP_CLOSE. So "close" counts sockets that hold a port without listening or
# connecting, which `ss` lists only with -B (iproute2 6.5+) and /proc/net/tcp never shows.
TCP_EMITTED = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
# The states a connection accepted on a listening port goes through (net/ipv4/tcp_input.c
# tcp_rcv_state_process, tcp_minisocks.c): a request socket (TCP_NEW_SYN_RECV, which inet_diag
# reports as syn_recv, as it does a Fast Open child), established once accepted, then either side
# closing first (fin_wait1, fin_wait2, closing or time_wait when the server closes; close_wait
# and last_ack when the client does). Never syn_sent (an active open: connect() from a socket
# bound to that port, possible with SO_REUSEPORT or another local address), close (a socket
# bound without connecting, which inet_diag finds in the bind hash since Linux 6.5) or listen.
LISTENER_CONNECTION_STATES: Dict[int, str] = {
    k: TCP_STATES[k] for k in (TCP_SYN_RECV, TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2,
                               TCP_CLOSING, TCP_CLOSE_WAIT, TCP_LAST_ACK, TCP_TIME_WAIT)}
# Datagram and raw sockets only have "connected" (TCP_ESTABLISHED) or not (TCP_CLOSE);
# ss calls these ESTAB and UNCONN. Unix stream and seqpacket sockets also listen.
DGRAM_STATES: Dict[int, str] = {1: "established", 7: "unconnected", 10: "listen"}
DGRAM_EMITTED = [1, 7]
UNIX_TYPES: Dict[int, str] = {1: "stream", 2: "dgram", 5: "seqpacket"}
UNIX_EMITTED: Dict[int, List[int]] = {1: [1, 7, 10], 2: [1, 7], 5: [1, 7, 10]}

FAMILIES: Tuple[Tuple[int, str], ...] = ((int(socket.AF_INET), "ipv4"),
                                         (int(socket.AF_INET6), "ipv6"))
FAMILY_NAMES: Dict[int, str] = dict(FAMILIES)

IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE, IPPROTO_RAW = 6, 17, 136, 255
PROTOCOLS: Tuple[Tuple[str, int], ...] = (("tcp", IPPROTO_TCP), ("udp", IPPROTO_UDP),
                                          ("udplite", IPPROTO_UDPLITE), ("raw", IPPROTO_RAW))
PROTOCOL_NUMBERS: Dict[str, int] = dict(PROTOCOLS)
# The /proc/net file of each (protocol, family).
PROC_FILES: Dict[Tuple[str, str], str] = {
    (proto, fam): proto + ("6" if fam == "ipv6" else "")
    for proto, _ in PROTOCOLS for _, fam in FAMILIES}


def tcp_states(names: str) -> Tuple[int, ...]:
    """The kernel's numbers of the space-separated TCP state names (as :data:`TCP_STATES` names
    them), in their order: another system's numbering, written as its headers list its states,
    turned into Linux's."""
    number = {name: num for num, name in TCP_STATES.items()}
    return tuple(number[name] for name in names.split())


def state_name(protocol: str, state: int) -> str:
    """The name of a kernel state number for a protocol, ``state_<n>`` for unknown numbers."""
    names = TCP_STATES if protocol == "tcp" else DGRAM_STATES
    return names.get(state, f"state_{state}")


# psutil names TCP states as the kernel does (ESTABLISHED, SYN_SENT, ...; "NONE" for sockets
# without a state, such as UDP); SYN_RECV is its spelling of the kernel's SYN_RECV.
PSUTIL_STATES: Dict[str, int] = {name.upper(): num for num, name in TCP_STATES.items()}
PSUTIL_STATES.update({"SYN_RECV": TCP_SYN_RECV, "NONE": TCP_CLOSE})
