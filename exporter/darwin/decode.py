"""Decoders of macOS's sysctl answers into the seam's vocabulary: pure functions of bytes.

Layouts are xnu's (https://github.com/apple-oss-distributions/xnu), read at tag
``xnu-11417.121.6`` (macOS 15.5) and checked against every release since ``xnu-4903``
(macOS 10.14); x86_64 and arm64 are both LP64 and little-endian, with the same layouts. Each
decoder reads only fields whose offsets are the same in all of those releases, so a kernel that
adds fields at the end, or (as xnu-11215 did to ``struct tcpstat``) in the middle, past that
prefix, is read right. The tests build every structure from the headers with ctypes and pin
its size.

* ``net.inet.tcp.stats`` (struct tcpstat, bsd/netinet/tcp_var.h), ``net.inet.udp.stats``
  (struct udpstat, udp_var.h), ``net.inet.ip.stats`` (struct ipstat, ip_var.h) and
  ``net.inet6.ip6.stats`` (struct ip6stat, bsd/netinet6/ip6_var.h) -> :data:`Groups` under
  Linux's group and field names (/proc/net/snmp, netstat, snmp6) where the meaning is the same,
  and xnu's own TCP counters as ``TcpDarwin``. The mapping is in each decoder; what has no
  counterpart of the same meaning is left out rather than approximated.
* ``NET_RT_DUMP`` (struct rt_msghdr and its sockaddrs, bsd/net/route.h) -> :class:`Route`\\ s.
* ``net.inet.{tcp,udp}.pcblist_n`` (struct xinpgen, then per socket xinpcb_n, xsocket_n,
  xsockbuf_n twice, xsockstat_n and, for TCP, xtcpcb_n; bsd/netinet/in_pcb.h,
  bsd/sys/socketvar.h, tcp_var.h; written by get_pcblist_n in bsd/netinet/in_pcblist.c) ->
  :class:`Conn`\\ s, read the way netstat.tproj/inet.c (protopr) reads them for ``netstat -an``.

xnu's counters are 32 bits wide, except ip6stat's: they wrap, which Prometheus takes for a
counter reset. A counter derived as a difference (Tcp OutSegs, Udp InDatagrams) is taken modulo
2^32 as the kernel's own would be.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from exporter.procfs.route import Route
from exporter.system.common import Conn, Groups
from exporter.vocabulary.names import TCP_CLOSE, TCP_ESTABLISHED, tcp_states

XNU_TAG = "xnu-11417.121.6"
_U32 = 0xFFFFFFFF


class DecodeError(ValueError):
    """Bytes that are not what the xnu layout says they should be (short, truncated, or a
    value outside its range); the message names the sysctl and the offset."""


def _fields(buf: bytes, what: str, names: Sequence[str], fmt: str) -> Dict[str, int]:
    size = struct.calcsize(f"<{len(names)}{fmt}")
    if len(buf) < size:
        raise DecodeError(f"{what}: {len(buf)} bytes, shorter than the {size} bytes of the "
                          f"fields read ({len(names)} fields, {XNU_TAG} layout)")
    return dict(zip(names, struct.unpack_from(f"<{len(names)}{fmt}", buf)))


def _names(text: str) -> Tuple[str, ...]:
    """Field names, in the structure's order, from a space-separated list."""
    return tuple(text.split())


def withheld(buf: bytes) -> bool:
    """Whether a statistics structure is all zeros: what macOS gives a user other than root
    for net.inet.tcp.stats while net.inet.tcp.disable_access_to_stats is 1, its default
    (tcp_getstat, bsd/netinet/tcp_input.c). A running system never has every counter at 0."""
    return not any(buf)


# --- net.inet.tcp.stats: struct tcpstat -------------------------------------------------------

# The first 89 fields of struct tcpstat, all u_int32_t, through tcps_sack_sboverflow: the same in
# every release from xnu-4903 to xnu-11417 (later fields moved: xnu-7195 removed six after
# tcps_sack_sboverflow, xnu-11215 inserted three there).
TCPSTAT_FIELDS = _names(
    "connattempt accepts connects drops conndrops closed segstimed rttupdated delack timeoutdrop "
    "rexmttimeo persisttimeo keeptimeo keepprobe keepdrops "
    "sndtotal sndpack sndbyte sndrexmitpack sndrexmitbyte sndacks sndprobe sndurg sndwinup "
    "sndctrl "
    "rcvtotal rcvpack rcvbyte rcvbadsum rcvbadoff rcvmemdrop rcvshort rcvduppack rcvdupbyte "
    "rcvpartduppack rcvpartdupbyte rcvoopack rcvoobyte rcvpackafterwin rcvbyteafterwin "
    "rcvafterclose rcvwinprobe rcvdupack rcvacktoomuch rcvackpack rcvackbyte rcvwinupd pawsdrop "
    "predack preddat pcbcachemiss cachedrtt cachedrttvar cachedssthresh usedrtt usedrttvar "
    "usedssthresh persistdrop badsyn mturesent listendrop synchallenge rstchallenge "
    "minmssdrops sndrexmitbad badrst "
    "sc_added sc_retransmitted sc_dupsyn sc_dropped sc_completed sc_bucketoverflow "
    "sc_cacheoverflow sc_reset sc_stale sc_aborted sc_badack sc_unreach sc_zonefail "
    "sc_sendcookie sc_recvcookie hc_added hc_bucketoverflow "
    "sack_recovery_episode sack_rexmits sack_rexmit_bytes sack_rcv_blocks sack_send_blocks "
    "sack_sboverflow")
# Fields xnu declares but never counts (no syncache or hostcache; nothing increments them).
_TCP_UNCOUNTED = frozenset({"pcbcachemiss", "minmssdrops", "hc_added", "hc_bucketoverflow"}
                           | {f for f in TCPSTAT_FIELDS if f.startswith("sc_")})
# Fields exported under a Linux name with the same meaning, not repeated in TcpDarwin.
_TCP_AS_LINUX = frozenset({"connattempt", "accepts", "rcvtotal", "sndrexmitpack", "rcvbadsum"})
# The TcpDarwin group: xnu's names without the tcps_ prefix, in the structure's order.
TCP_DARWIN = tuple(f for f in TCPSTAT_FIELDS if f not in _TCP_UNCOUNTED | _TCP_AS_LINUX)


def tcp_stats(buf: bytes) -> Groups:
    """``Tcp`` under Linux's names (RFC 4022 and /proc/net/snmp meanings, checked against where
    xnu counts each one) and ``TcpDarwin``.

    * ActiveOpens = tcps_connattempt: counted by tcp_connect, CLOSED -> SYN_SENT.
    * PassiveOpens = tcps_accepts: counted in tcp_input as a listener's new connection enters
      SYN_RECEIVED, LISTEN -> SYN_RECV.
    * InSegs = tcps_rcvtotal: every segment tcp_input sees, before the checksum is verified.
    * OutSegs = tcps_sndtotal - tcps_sndrexmitpack: sndtotal counts every segment sent,
      retransmissions included, which OutSegs excludes.
    * RetransSegs = tcps_sndrexmitpack: segments carrying data sent before.
    * InErrs = tcps_rcvbadsum + tcps_rcvbadoff + tcps_rcvshort; InCsumErrors = tcps_rcvbadsum.

    Left out: AttemptFails and EstabResets, whose nearest BSD counters count other transitions
    (tcps_conndrops only drops before a SYN was received; tcps_drops also counts SYN_RECEIVED,
    FIN_WAIT and listen-queue drops): both are in TcpDarwin as conndrops and drops. OutRsts
    (xnu counts SYN, FIN and RST segments together, tcps_sndctrl), CurrEstab (a level, not in
    tcpstat) and the RTO constants have no counterpart.
    """
    s = _fields(buf, "net.inet.tcp.stats", TCPSTAT_FIELDS, "I")
    tcp = {
        "ActiveOpens": s["connattempt"],
        "PassiveOpens": s["accepts"],
        "InSegs": s["rcvtotal"],
        "OutSegs": (s["sndtotal"] - s["sndrexmitpack"]) & _U32,
        "RetransSegs": s["sndrexmitpack"],
        "InErrs": s["rcvbadsum"] + s["rcvbadoff"] + s["rcvshort"],
        "InCsumErrors": s["rcvbadsum"],
    }
    return {"Tcp": tcp, "TcpDarwin": {f: s[f] for f in TCP_DARWIN}}


# --- net.inet.udp.stats: struct udpstat -------------------------------------------------------

UDPSTAT_FIELDS = _names(
    "ipackets hdrops badsum badlen noport noportbcast fullsock pcbcachemiss pcbhashmiss "
    "opackets fastout nosum noportmcast filtermcast")


def udp_stats(buf: bytes) -> Groups:
    """``Udp`` under Linux's names. xnu keeps one struct udpstat for IPv4 and IPv6: its input
    counters cover both families, while udps_opackets is counted by udp_output only (IPv4;
    udp6_output counts nothing). There is no Udp6 group.

    * InDatagrams: delivered to sockets, computed as ``netstat -s -p udp`` computes its
      "delivered" line: ipackets - hdrops - badlen - badsum - noport - noportbcast - fullsock.
    * NoPorts = udps_noport - udps_noportmcast: unicast datagrams for a port without a socket
      (xnu's noport also counts IPv6 multicast nobody wanted, which Linux counts in
      IgnoredMulti).
    * InErrors = hdrops + badsum + badlen + fullsock: received, not delivered, for another
      reason than no socket (RFC 4113; Linux counts a full receive buffer there too).
    * RcvbufErrors = udps_fullsock; InCsumErrors = udps_badsum.
    * IgnoredMulti = udps_noportbcast + udps_noportmcast: broadcast and multicast datagrams no
      socket wanted.
    * OutDatagrams = udps_opackets (IPv4 only, see above).
    """
    s = _fields(buf, "net.inet.udp.stats", UDPSTAT_FIELDS, "I")
    delivered = (s["ipackets"] - s["hdrops"] - s["badlen"] - s["badsum"] - s["noport"]
                 - s["noportbcast"] - s["fullsock"]) & _U32
    return {"Udp": {
        "InDatagrams": delivered,
        "NoPorts": (s["noport"] - s["noportmcast"]) & _U32,
        "InErrors": s["hdrops"] + s["badsum"] + s["badlen"] + s["fullsock"],
        "OutDatagrams": s["opackets"],
        "RcvbufErrors": s["fullsock"],
        "InCsumErrors": s["badsum"],
        "IgnoredMulti": s["noportbcast"] + s["noportmcast"],
    }}


# --- net.inet.ip.stats: struct ipstat ---------------------------------------------------------

IPSTAT_FIELDS = _names(
    "total badsum tooshort toosmall badhlen badlen fragments fragdropped fragtimeout forward "
    "fastforward cantforward redirectsent noproto delivered localout odropped reassembled "
    "fragmented ofragments cantfrag badoptions noroute badvers rawout")


def int32(buf: bytes, what: str) -> int:
    """An ``int`` sysctl (``net.inet.ip.forwarding``)."""
    if len(buf) != 4:
        raise DecodeError(f"{what}: expected a 4-byte int, got {len(buf)} bytes")
    return int(struct.unpack("<i", buf)[0])


def _fragments(s: Dict[str, int]) -> Dict[str, int]:
    """Reassembly and fragmentation counters, which struct ipstat and struct ip6stat name
    alike, under the RFC 4293 names both Ip and Ip6 use."""
    return {"ReasmReqds": s["fragments"], "ReasmOKs": s["reassembled"],
            "FragOKs": s["fragmented"], "FragFails": s["cantfrag"],
            "FragCreates": s["ofragments"]}


def ip_stats(buf: bytes, forwarding: Optional[int] = None,
             ttl: Optional[int] = None) -> Groups:
    """``Ip`` and ``IpExt`` under Linux's names (RFC 4293 meanings). ``forwarding`` is
    net.inet.ip.forwarding (1 on, 0 off; exported as Linux does, 1 forwarding, 2 not) and
    ``ttl`` net.inet.ip.ttl; None leaves them out.

    * InReceives = ips_total; InDelivers = ips_delivered; ForwDatagrams = ips_forward.
    * InHdrErrors = badsum + badhlen + badlen + badvers + badoptions (checksum, format,
      version and option errors); the truncated ones (ips_tooshort) are IpExt InTruncatedPkts.
    * InUnknownProtos = ips_noproto (rip_input: no socket and no protocol for it).
    * OutRequests = ips_localout + ips_rawout: ip_output counts the datagrams local protocols
      hand it in localout, except raw sockets' own headers (IP_HDRINCL), counted in rawout.
    * OutDiscards = ips_odropped; OutNoRoutes = ips_noroute.
    * ReasmReqds = ips_fragments; ReasmOKs = ips_reassembled; FragOKs = ips_fragmented;
      FragFails = ips_cantfrag; FragCreates = ips_ofragments.
    * IpExt InCsumErrors = ips_badsum.

    Left out: ReasmTimeout and ReasmFails (xnu counts fragments, Linux datagrams),
    InAddrErrors (ips_cantforward mixes addresses not ours with forwarding failures) and
    InDiscards (no counterpart).
    """
    s = _fields(buf, "net.inet.ip.stats", IPSTAT_FIELDS, "I")
    ip: Dict[str, int] = {}
    if forwarding is not None:
        ip["Forwarding"] = 1 if forwarding else 2
    if ttl is not None:
        ip["DefaultTTL"] = ttl
    ip.update({
        "InReceives": s["total"],
        "InHdrErrors": s["badsum"] + s["badhlen"] + s["badlen"] + s["badvers"]
        + s["badoptions"],
        "ForwDatagrams": s["forward"],
        "InUnknownProtos": s["noproto"],
        "InDelivers": s["delivered"],
        "OutRequests": s["localout"] + s["rawout"],
        "OutDiscards": s["odropped"],
        "OutNoRoutes": s["noroute"],
        **_fragments(s),
    })
    return {"Ip": ip, "IpExt": {"InTruncatedPkts": s["tooshort"], "InCsumErrors": s["badsum"]}}


# --- net.inet6.ip6.stats: struct ip6stat (u_quad_t) -------------------------------------------

# Through ip6s_toomanyhdr; ip6s_nxthist[256] and ip6s_m2m[32] are arrays.
IP6STAT_FIELDS = (
    _names("total tooshort toosmall fragments fragdropped fragtimeout fragoverflow forward "
           "cantforward redirectsent delivered localout odropped reassembled atmfrag_rcvd "
           "fragmented ofragments cantfrag badoptions noroute badvers rawout badscope notmember")
    + tuple(f"nxthist_{i}" for i in range(256)) + ("m1",) + tuple(f"m2m_{i}" for i in range(32))
    + _names("mext1 mext2m exthdrtoolong nogif toomanyhdr"))


def ip6_stats(buf: bytes) -> Groups:
    """``Ip6`` under Linux's snmp6 names.

    * InReceives = ip6s_total; InDelivers = ip6s_delivered; OutForwDatagrams = ip6s_forward.
    * InHdrErrors = badvers + badoptions + toomanyhdr; InTruncatedPkts = ip6s_tooshort.
    * OutRequests = ip6s_localout; OutDiscards = ip6s_odropped; OutNoRoutes = ip6s_noroute
      (counted by output and forwarding alike).
    * ReasmReqds = ip6s_fragments; ReasmOKs = ip6s_reassembled; FragOKs = ip6s_fragmented;
      FragFails = ip6s_cantfrag; FragCreates = ip6s_ofragments.
    """
    s = _fields(buf, "net.inet6.ip6.stats", IP6STAT_FIELDS, "Q")
    return {"Ip6": {
        "InReceives": s["total"],
        "InHdrErrors": s["badvers"] + s["badoptions"] + s["toomanyhdr"],
        "InTruncatedPkts": s["tooshort"],
        "InDelivers": s["delivered"],
        "OutForwDatagrams": s["forward"],
        "OutRequests": s["localout"],
        "OutDiscards": s["odropped"],
        "OutNoRoutes": s["noroute"],
        **_fragments(s),
    }}


# --- NET_RT_DUMP: struct rt_msghdr and sockaddrs ----------------------------------------------

# <sys/socket.h> address families on macOS (AF_INET6 is 30 there, not Linux's 10).
AF_INET, AF_INET6 = 2, 30
_FAMILY = {AF_INET: "ipv4", AF_INET6: "ipv6"}
RTM_VERSION = 5
RTF_GATEWAY, RTF_HOST, RTF_LLINFO, RTF_WASCLONED = 0x2, 0x4, 0x400, 0x20000
RTA_DST, RTA_GATEWAY, RTA_NETMASK = 0x1, 0x2, 0x4
RTAX_MAX = 8
# struct rt_msghdr: rtm_msglen (u_short), rtm_version, rtm_type (u_char), rtm_index (u_short),
# 2 bytes of padding, rtm_flags, rtm_addrs, rtm_pid, rtm_seq, rtm_errno, rtm_use (int),
# rtm_inits (u_int32_t), rtm_rmx (struct rt_metrics: 14 u_int32_t) = 92 bytes.
RT_MSGHDR = struct.Struct("<HBBH2xiiiiiiI56x")
# Where the address sits in a sockaddr_in (sin_addr) and a sockaddr_in6 (sin6_addr).
_ADDR = {AF_INET: (4, 4), AF_INET6: (8, 16)}


def _roundup32(n: int) -> int:
    """ROUNDUP32 of bsd/net/rtsock.c: sockaddrs in routing messages are padded to 4 bytes,
    and one of length 0 still takes 4."""
    return (1 + ((n - 1) | 3)) if n > 0 else 4


def _addr(sa: bytes, family: int) -> bytes:
    """The address bytes of a sockaddr of ``family``; a netmask's sockaddr is cut after its
    last non-zero byte (sa_len counts what is there), so what it lacks is zero."""
    off, n = _ADDR[family]
    return sa[off:off + n].ljust(n, b"\0")


def _unscope(family: int, raw: bytes) -> bytes:
    """An IPv6 link-local or link/node-local multicast address without the interface index
    the KAME stack embeds in bytes 2-3 (netstat's route.c p_sockaddr clears it the same way)."""
    if family == AF_INET6 and (raw[0] == 0xFE and raw[1] & 0xC0 == 0x80
                               or raw[0] == 0xFF and raw[1] & 0x0F in (1, 2)):
        return raw[:2] + b"\0\0" + raw[4:]
    return raw


def _prefix(mask: bytes) -> int:
    """The prefix length of a netmask: its leading one bits (masks on the routing socket are
    contiguous; a non-contiguous one would be read as its leading part)."""
    bits = int.from_bytes(mask, "big")
    width = len(mask) * 8
    n = 0
    while n < width and bits >> (width - 1 - n) & 1:
        n += 1
    return n


def _sockaddrs(buf: bytes, start: int, end: int, addrs: int) -> Dict[int, bytes]:
    out: Dict[int, bytes] = {}
    p = start
    for i in range(RTAX_MAX):
        if not addrs & (1 << i):
            continue
        if p >= end:
            raise DecodeError(f"net.route.0.0.dump: sockaddr {i} of the message at offset "
                              f"{start - RT_MSGHDR.size} lies past its end ({end})")
        sa_len = buf[p]
        if p + sa_len > end:
            raise DecodeError(f"net.route.0.0.dump: sockaddr {i} at offset {p} ({sa_len} bytes) "
                              f"runs past the end of its message ({end})")
        out[i] = buf[p:p + sa_len]
        p += _roundup32(sa_len)
    return out


def routes(buf: bytes, ifname: Callable[[int], str]) -> List[Route]:
    """The IPv4 and IPv6 routes of a NET_RT_DUMP buffer, as ``netstat -rn`` lists them less
    the neighbour entries (RTF_LLINFO: ARP and NDP) and the entries cloned from another route
    (RTF_WASCLONED: per-host routes the kernel made on use), so that the count means what
    ``ip route`` counts on Linux. Scoped routes (RTF_IFSCOPE, netstat's flag ``I``) are kept.

    destination is RTA_DST with RTA_NETMASK's prefix, /32 or /128 for a host route (RTF_HOST,
    or no netmask); gateway is RTA_GATEWAY's address when RTF_GATEWAY is set, else ""; the
    interface is ``ifname(rtm_index)`` ("" when that fails); the metric is 0 (xnu has none);
    flags are xnu's RTF_* bits."""
    out: List[Route] = []
    names: Dict[int, str] = {}
    off = 0
    while off < len(buf):
        if len(buf) - off < 2:
            raise DecodeError(f"net.route.0.0.dump: {len(buf) - off} stray bytes at offset {off}")
        (msglen,) = struct.unpack_from("<H", buf, off)
        if msglen < RT_MSGHDR.size or off + msglen > len(buf):
            raise DecodeError(f"net.route.0.0.dump: message at offset {off} says {msglen} bytes;"
                              f" {len(buf) - off} remain and a header is {RT_MSGHDR.size}")
        (_len, version, _type, index, flags, addrs, _pid, _seq, _errno, _use,
         _inits) = RT_MSGHDR.unpack_from(buf, off)
        start, end = off + RT_MSGHDR.size, off + msglen
        off = end
        if version != RTM_VERSION or flags & (RTF_LLINFO | RTF_WASCLONED):
            continue
        sa = _sockaddrs(buf, start, end, addrs)
        dst = sa.get(0)
        if dst is None or len(dst) < 2 or dst[1] not in _FAMILY:
            continue  # a link-layer or other family's table
        family = dst[1]
        width = _ADDR[family][1] * 8
        mask = sa.get(2)
        plen = width if flags & RTF_HOST or mask is None else _prefix(_addr(mask, family))
        addr = ipaddress.ip_address(_unscope(family, _addr(dst, family)))
        net = ipaddress.ip_network(f"{addr}/{plen}", strict=False)
        gateway = ""
        gw = sa.get(1)
        if flags & RTF_GATEWAY and gw is not None and len(gw) >= 2 and gw[1] in _FAMILY:
            gateway = str(ipaddress.ip_address(_unscope(gw[1], _addr(gw, gw[1]))))
        if index not in names:
            try:
                names[index] = ifname(index) if index else ""
            except (OSError, ValueError, OverflowError):
                names[index] = ""
        out.append(Route(_FAMILY[family], str(net), gateway, names[index], 0, flags))
    return out


# --- net.inet.{tcp,udp}.pcblist_n ---------------------------------------------------------------

# struct xinpgen (#pragma pack(4)): xig_len, xig_count (u_int32), xig_gen, xig_sogen (u_quad).
XINPGEN = struct.Struct("<IIQQ")
# Kinds of the items that follow it, each ROUNDUP64 of its length (bsd/sys/socketvar.h).
XSO_SOCKET, XSO_RCVBUF, XSO_SNDBUF, XSO_STATS, XSO_INPCB, XSO_TCPCB = 1, 2, 4, 8, 0x10, 0x20
_ALL_INP = XSO_SOCKET | XSO_RCVBUF | XSO_SNDBUF | XSO_STATS | XSO_INPCB
_ALL_TCP = _ALL_INP | XSO_TCPCB
INP_IPV4, INP_IPV6 = 0x1, 0x2
IPPROTO = {"tcp": 6, "udp": 17}
# Offsets in the items (#pragma pack(4): a u_int64_t is aligned to 4 bytes there).
# struct xinpcb_n: xi_len 0, xi_kind 4, xi_inpp 8, inp_fport 16, inp_lport 18 (network byte
# order), inp_ppcb 20, inp_gencnt 28, inp_flags 36, inp_flow 40, inp_vflag 44, inp_ip_ttl 45,
# inp_ip_p 46, inp_dependfaddr 48 (16 bytes: an in6_addr, or an in_addr at 60),
# inp_dependladdr 64 (likewise, in_addr at 76), ... 104 bytes in all.
_INP_PORTS, _INP_GENCNT, _INP_VFLAG, _INP_FADDR, _INP_LADDR, _INP_MIN = 16, 28, 44, 48, 64, 80
# struct xsocket_n: xso_len 0, xso_kind 4, xso_so 8, so_type 16, so_options 20, so_linger 24,
# so_state 26, so_pcb 28, xso_protocol 36, xso_family 40, so_qlen 44, so_incqlen 46,
# so_qlimit 48, so_timeo 50, so_error 52, so_pgid 56, so_oobmark 60, so_uid 64,
# so_last_pid 68, so_e_pid 72, ... (104 bytes since xnu-8792, 76 before: the walk goes by
# xso_len).
_SO_SO, _SO_PROTOCOL, _SO_UID, _SO_MIN = 8, 36, 64, 68
# struct xtcpcb_n: xt_len 0, xt_kind 4, t_segq 8, t_dupacks 16, t_timer[4] 20, t_state 36.
_TCP_STATE, _TCP_MIN = 36, 40
_MIN_LEN = {XSO_INPCB: _INP_MIN, XSO_SOCKET: _SO_MIN, XSO_TCPCB: _TCP_MIN}

# TCPS_* of bsd/netinet/tcp_fsm.h -> the Linux kernel's state numbers.
TCP_STATES = tcp_states("close listen syn_sent syn_recv established close_wait fin_wait1 closing "
                        "last_ack fin_wait2 time_wait")


def _roundup64(n: int) -> int:
    """ROUNDUP64 of netstat.tproj/inet.c (8 for a length of 0)."""
    return (1 + ((n - 1) | 7)) if n > 0 else 8


@dataclass(frozen=True)
class PcbList:
    """One read of a pcblist_n sysctl: its sockets, and whether the table changed while the
    kernel copied it out (the generation counts of the head and tail xinpgen differ), in which
    case netstat warns that some sockets may have been created or deleted."""

    conns: List[Conn]
    changed: bool


def _conn(buf: bytes, inp: int, so: int, tcp: Optional[int], protocol: str) -> Optional[Conn]:
    vflag = buf[inp + _INP_VFLAG]
    if vflag & INP_IPV6:
        fam, af = "ipv6", socket.AF_INET6
        local = bytes(buf[inp + _INP_LADDR:inp + _INP_LADDR + 16])
        remote = bytes(buf[inp + _INP_FADDR:inp + _INP_FADDR + 16])
        local, remote = _unscope(AF_INET6, local), _unscope(AF_INET6, remote)
    elif vflag & INP_IPV4:
        fam, af = "ipv4", socket.AF_INET
        local = bytes(buf[inp + _INP_LADDR + 12:inp + _INP_LADDR + 16])
        remote = bytes(buf[inp + _INP_FADDR + 12:inp + _INP_FADDR + 16])
    else:
        return None  # neither family: netstat skips it too
    rport, lport = struct.unpack_from(">HH", buf, inp + _INP_PORTS)
    if tcp is None:
        state = TCP_ESTABLISHED if rport else TCP_CLOSE
    else:
        (t_state,) = struct.unpack_from("<i", buf, tcp + _TCP_STATE)
        if not 0 <= t_state < len(TCP_STATES):
            raise DecodeError(f"net.inet.tcp.pcblist_n: t_state {t_state} at offset "
                              f"{tcp + _TCP_STATE} is no TCPS_* state (0-10)")
        state = TCP_STATES[t_state]
    # A flow of the user-space stack (Skywalk; nstat_userland_list_snapshot in
    # bsd/net/ntstat.c) has no kernel socket: xso_so is 0 and so_uid was never filled in.
    (xso_so,) = struct.unpack_from("<Q", buf, so + _SO_SO)
    uid = struct.unpack_from("<I", buf, so + _SO_UID)[0] if xso_so else None
    return Conn(fam, state, socket.inet_ntop(af, local), lport, socket.inet_ntop(af, remote),
                rport, None, uid)


def pcblist(buf: bytes, protocol: str) -> PcbList:
    """The sockets of a ``net.inet.<protocol>.pcblist_n`` buffer, walked as protopr in
    netstat.tproj/inet.c walks it: after the head xinpgen, items of one socket follow each
    other (each kind once: xinpcb_n, xsocket_n, xsockbuf_n for receive and send, xsockstat_n,
    xtcpcb_n for TCP), each padded to 8 bytes, until an item no longer than an xinpgen: the
    tail xinpgen. Sockets of another protocol, of neither family, or created after the head's
    generation (freed and reused during the copy) are skipped, as netstat skips them.

    Family from inp_vflag (INP_IPV6: an AF_INET6 socket, dual-stack "46" ones included; else
    INP_IPV4); addresses and ports from xinpcb_n; the TCP state from xtcpcb_n t_state in
    Linux's numbering; UDP is connected (TCP_ESTABLISHED) with a remote port, else
    unconnected (TCP_CLOSE). pid is None: xsocket_n's so_last_pid is the last process that
    used the socket, not the one holding it (a launchd-activated listener shows launchd until
    its daemon accepts, pre-forked workers take turns), and naming the wrong program is worse
    than naming none. uid is so_uid, the credential the socket was created with.
    """
    what = f"net.inet.{protocol}.pcblist_n"
    if len(buf) < XINPGEN.size:
        raise DecodeError(f"{what}: {len(buf)} bytes, shorter than its head xinpgen "
                          f"({XINPGEN.size})")
    head_len, count, gen, _sogen = XINPGEN.unpack_from(buf, 0)
    if head_len != XINPGEN.size:
        raise DecodeError(f"{what}: the head xinpgen says {head_len} bytes, not {XINPGEN.size}")
    if count == 0 and len(buf) == XINPGEN.size:
        return PcbList([], False)  # an empty table: get_pcblist_n writes no tail
    proto = IPPROTO[protocol]
    need = _ALL_TCP if protocol == "tcp" else _ALL_INP
    conns: List[Conn] = []
    items: Dict[int, int] = {}
    off = _roundup64(head_len)
    tail: Optional[Tuple[int, int]] = None
    while off + 8 <= len(buf):
        length, kind = struct.unpack_from("<II", buf, off)
        if length <= XINPGEN.size:
            if off + XINPGEN.size > len(buf):
                break
            tail = (off, XINPGEN.unpack_from(buf, off)[2])
            break
        if off + length > len(buf):
            raise DecodeError(f"{what}: item of kind {kind:#x} at offset {off} ({length} bytes) "
                              f"runs past the end of the {len(buf)}-byte buffer (truncated)")
        if length < _MIN_LEN.get(kind, 0):
            raise DecodeError(f"{what}: item of kind {kind:#x} at offset {off} is {length} "
                              f"bytes, shorter than the {_MIN_LEN[kind]} read from it")
        if kind in (XSO_SOCKET, XSO_RCVBUF, XSO_SNDBUF, XSO_STATS, XSO_INPCB, XSO_TCPCB) \
                and kind not in items:
            items[kind] = off
        off += _roundup64(length)
        if sum(items) != need:
            continue
        inp, so = items[XSO_INPCB], items[XSO_SOCKET]
        tcp = items.get(XSO_TCPCB)
        items = {}
        (xso_protocol,) = struct.unpack_from("<i", buf, so + _SO_PROTOCOL)
        if xso_protocol != proto:
            continue
        (inp_gencnt,) = struct.unpack_from("<Q", buf, inp + _INP_GENCNT)
        if inp_gencnt > gen:
            continue
        c = _conn(buf, inp, so, tcp, protocol)
        if c is not None:
            conns.append(c)
    if tail is None:
        raise DecodeError(f"{what}: no tail xinpgen in the {len(buf)}-byte buffer "
                          f"(truncated after offset {off})")
    if items:
        raise DecodeError(f"{what}: the items before the tail at offset {tail[0]} are not a "
                          f"whole socket (kinds {sum(items):#x} of {need:#x})")
    return PcbList(conns, tail[1] != gen)
