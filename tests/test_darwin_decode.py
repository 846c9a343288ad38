"""macOS, tested here through its documented structures: every decoder of exporter.darwin.decode
on structures built with ctypes from xnu's headers, filled with known values and decoded to the
exact metrics; then the real DarwinSystem with its sysctl calls answered by those bytes, through
the collectors to the exposition; and the ctypes plumbing of exporter.darwin.sysctl against a
stand-in for libc.

The layouts below are transcribed from https://github.com/apple-oss-distributions/xnu at tag
xnu-11417.121.6 (macOS 15.5): bsd/netinet/tcp_var.h, udp_var.h, ip_var.h, in_pcb.h,
bsd/netinet6/ip6_var.h, bsd/sys/socketvar.h, bsd/net/route.h, bsd/net/if_dl.h and
bsd/netinet6/in6.h, with the older layouts that still run (struct tcpstat of xnu-7195, macOS 11;
struct xsocket_n before xnu-8792, macOS 13) where they differ. x86_64 and arm64 are both LP64
and little-endian: ctypes on this machine lays the structures out as clang does there. The
sizes pinned in test_layout_sizes are computed from each header's field list.
"""

from __future__ import annotations

import collections
import ctypes
import errno
import ipaddress
import logging
import os
import pwd
import socket
import struct
import subprocess
import sys
from ctypes import (
    Structure,
    Union,
    c_char,
    c_int,
    c_int32,
    c_short,
    c_ubyte,
    c_uint,
    c_uint16,
    c_uint32,
    c_uint64,
    c_ushort,
    sizeof,
)
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Type

import psutil
import pytest
from helpers import ROOT, parse, select, value

from exporter import dump, system
from exporter.collectors.listeners import ListenersOptions
from exporter.collectors.protocols import DEFAULT_PROTOCOLS_FIELDS, ProtocolsOptions
from exporter.collectors.protocols.table import TABLE
from exporter.collectors.routes import RoutesOptions
from exporter.config import Config
from exporter.darwin import decode
from exporter.darwin import sysctl as darwin_sysctl
from exporter.procfs.route import Route
from exporter.scrape import Exporter
from exporter.system import _darwin
from exporter.system.common import Conn
from exporter.vocabulary import names

# --- the layouts -----------------------------------------------------------------------------

# struct tcpstat, bsd/netinet/tcp_var.h: every field u_int32_t except those marked ":q"
# (u_int64_t). xnu-11417.121.6 (the same at xnu-11215, macOS 15):
TCPSTAT_11417 = """
connattempt accepts connects drops conndrops closed segstimed rttupdated delack timeoutdrop
rexmttimeo persisttimeo keeptimeo keepprobe keepdrops sndtotal sndpack sndbyte sndrexmitpack
sndrexmitbyte sndacks sndprobe sndurg sndwinup sndctrl rcvtotal rcvpack rcvbyte rcvbadsum
rcvbadoff rcvmemdrop rcvshort rcvduppack rcvdupbyte rcvpartduppack rcvpartdupbyte rcvoopack
rcvoobyte rcvpackafterwin rcvbyteafterwin rcvafterclose rcvwinprobe rcvdupack rcvacktoomuch
rcvackpack rcvackbyte rcvwinupd pawsdrop predack preddat pcbcachemiss cachedrtt cachedrttvar
cachedssthresh usedrtt usedrttvar usedssthresh persistdrop badsyn mturesent listendrop
synchallenge rstchallenge minmssdrops sndrexmitbad badrst sc_added sc_retransmitted sc_dupsyn
sc_dropped sc_completed sc_bucketoverflow sc_cacheoverflow sc_reset sc_stale sc_aborted
sc_badack sc_unreach sc_zonefail sc_sendcookie sc_recvcookie hc_added hc_bucketoverflow
sack_recovery_episode sack_rexmits sack_rexmit_bytes sack_rcv_blocks sack_send_blocks
sack_sboverflow rack_recovery_episode rack_reordering_timeout_recovery_episode rack_rexmits
bg_rcvtotal rxtfindrop fcholdpacket limited_txt early_rexmt sack_ackadv rcv_swcsum
rcv_swcsum_bytes rcv6_swcsum rcv6_swcsum_bytes snd_swcsum snd_swcsum_bytes snd6_swcsum
snd6_swcsum_bytes unused_1 unused_2 unused_3 invalid_mpcap invalid_joins mpcap_fallback
join_fallback estab_fallback invalid_opt mp_outofwin mp_reducedwin mp_badcsum mp_oodata
mp_switches mp_rcvtotal mp_rcvbytes mp_sndpacks mp_sndbytes join_rxmts tailloss_rto
reordered_pkts recovered_pkts pto rto_after_pto tlp_recovery tlp_recoverlastpkt
ecn_client_success ecn_recv_ece ecn_sent_ece detect_reordering delay_recovery avoid_rxmt
unnecessary_rxmt nostretchack rescue_rxmt pto_in_recovery pmtudbh_reverted dsack_disable
dsack_ackloss dsack_badrexmt dsack_sent dsack_recvd dsack_recvd_old mp_sel_symtomsd mp_sel_rtt
mp_sel_rto mp_sel_peer mp_num_probes mp_verdowngrade drop_after_sleep probe_if
probe_if_conflict ecn_client_setup ecn_server_setup ecn_server_success ecn_ace_syn_not_ect
ecn_ace_syn_ect1 ecn_ace_syn_ect0 ecn_ace_syn_ce ecn_lost_synack ecn_lost_syn
ecn_not_supported ecn_recv_ce ecn_ace_recv_ce ecn_conn_recv_ce ecn_conn_recv_ece
ecn_conn_plnoce ecn_conn_pl_ce ecn_conn_nopl_ce ecn_fallback_synloss ecn_fallback_reorder
ecn_fallback_ce tfo_syn_data_rcv tfo_cookie_req_rcv tfo_cookie_sent tfo_cookie_invalid
tfo_cookie_req tfo_cookie_rcv tfo_syn_data_sent tfo_syn_data_acked tfo_syn_loss tfo_blackhole
tfo_cookie_wrong tfo_no_cookie_rcv tfo_heuristics_disable tfo_sndblackhole mss_to_default
mss_to_medium mss_to_low ecn_fallback_droprst ecn_fallback_droprxmt ecn_fallback_synrst
mptcp_rcvmemdrop mptcp_rcvduppack mptcp_rcvpackafterwin timer_drift_le_1_ms
timer_drift_le_10_ms timer_drift_le_20_ms timer_drift_le_50_ms timer_drift_le_100_ms
timer_drift_le_200_ms timer_drift_le_500_ms timer_drift_le_1000_ms timer_drift_gt_1000_ms
mptcp_handover_attempt mptcp_interactive_attempt mptcp_aggregate_attempt
mptcp_fp_handover_attempt mptcp_fp_interactive_attempt mptcp_fp_aggregate_attempt
mptcp_heuristic_fallback mptcp_fp_heuristic_fallback mptcp_handover_success_wifi
mptcp_handover_success_cell mptcp_interactive_success mptcp_aggregate_success
mptcp_fp_handover_success_wifi mptcp_fp_handover_success_cell mptcp_fp_interactive_success
mptcp_fp_aggregate_success mptcp_handover_cell_from_wifi mptcp_handover_wifi_from_cell
mptcp_interactive_cell_from_wifi mptcp_handover_cell_bytes:q mptcp_interactive_cell_bytes:q
mptcp_aggregate_cell_bytes:q mptcp_handover_all_bytes:q mptcp_interactive_all_bytes:q
mptcp_aggregate_all_bytes:q mptcp_back_to_wifi mptcp_wifi_proxy mptcp_cell_proxy
ka_offload_drops mptcp_triggered_cell fin_timeout_drops
"""
# xnu-7195.141.2 (macOS 11): no tcps_rack_* after tcps_sack_sboverflow, no AccECN counters, no
# tcps_fin_timeout_drops.
_GONE_7195 = {"rack_recovery_episode", "rack_reordering_timeout_recovery_episode",
              "rack_rexmits", "ecn_ace_syn_not_ect", "ecn_ace_syn_ect1", "ecn_ace_syn_ect0",
              "ecn_ace_syn_ce", "ecn_ace_recv_ce", "fin_timeout_drops"}
TCPSTAT_7195 = " ".join(f for f in TCPSTAT_11417.split() if f not in _GONE_7195)

# struct udpstat, bsd/netinet/udp_var.h: u_int32_t, unchanged since macOS 10.14.
UDPSTAT = """
ipackets hdrops badsum badlen noport noportbcast fullsock pcbcachemiss pcbhashmiss opackets
fastout nosum noportmcast filtermcast rcv_swcsum rcv_swcsum_bytes rcv6_swcsum
rcv6_swcsum_bytes snd_swcsum snd_swcsum_bytes snd6_swcsum snd6_swcsum_bytes
"""
# struct ipstat, bsd/netinet/ip_var.h: u_int32_t; the last three are new in xnu-11215.
IPSTAT = """
total badsum tooshort toosmall badhlen badlen fragments fragdropped fragtimeout forward
fastforward cantforward redirectsent noproto delivered localout odropped reassembled fragmented
ofragments cantfrag badoptions noroute badvers rawout toolong notmember nogif badaddr
pktdropcntrl rcv_swcsum rcv_swcsum_bytes snd_swcsum snd_swcsum_bytes adj adj_hwcsum_clr
rxc_collisions rxc_chained rxc_notchain rxc_chainsz_gt2 rxc_chainsz_gt4 rxc_notlist
raw_sappend_fail necp_policy_drop rcv_if_weak_match rcv_if_no_match input_ipf_drop
input_no_proto src_addr_not_avail
"""
# struct ip6stat, bsd/netinet6/ip6_var.h: u_quad_t; "name[n]" is an array (SCOPE6_ID_MAX 16,
# bsd/netinet6/scope6_var.h; IP6S_SRCRULE_COUNT 16).
IP6STAT = """
total tooshort toosmall fragments fragdropped fragtimeout fragoverflow forward cantforward
redirectsent delivered localout odropped reassembled atmfrag_rcvd fragmented ofragments cantfrag
badoptions noroute badvers rawout badscope notmember nxthist[256] m1 m2m[32] mext1 mext2m
exthdrtoolong nogif toomanyhdr sources_none sources_sameif[16] sources_otherif[16]
sources_samescope[16] sources_otherscope[16] sources_deprecated[16] forward_cachehit
forward_cachemiss sources_rule[16] sources_skip_expensive_secondary_if pktdropcntrl adj
adj_hwcsum_clr dad_collide dad_loopcount necp_policy_drop clat464_in_tooshort_drop
clat464_in_nov6addr_drop clat464_in_nov4addr_drop clat464_in_v4synthfail_drop
clat464_in_64transfail_drop clat464_in_64proto_transfail_drop clat464_in_64frag_transfail_drop
clat464_in_invalpbuf_drop clat464_in_success clat464_in_drop clat464_in_v4_drop
clat464_out_nov6addr_drop clat464_out_v6synthfail_drop clat464_out_46transfail_drop
clat464_out_46proto_transfail_drop clat464_out_46frag_transfail_drop
clat464_out_invalpbuf_drop clat464_out_success clat464_out_drop clat464_v6addr_conffail
clat464_plat64_pfx_setfail clat464_plat64_pfx_getfail overlap_frag_drop rcv_if_weak_match
rcv_if_no_match
"""


def counters(name: str, text: str, default: Any = c_uint32) -> Type[Structure]:
    """A structure of counters from a field list (":q" u_int64_t, "name[n]" an array)."""
    fields: List[Tuple[str, Any]] = []
    for word in text.split():
        typ = default
        if word.endswith(":q"):
            word, typ = word[:-2], c_uint64
        if word.endswith("]"):
            word, n = word[:-1].split("[")
            typ = typ * int(n)
        fields.append((word, typ))
    return type(name, (Structure,), {"_fields_": fields})


Tcpstat = counters("tcpstat", TCPSTAT_11417)
Tcpstat7195 = counters("tcpstat_7195", TCPSTAT_7195)
Udpstat = counters("udpstat", UDPSTAT)
Ipstat = counters("ipstat", IPSTAT)
Ip6stat = counters("ip6stat", IP6STAT, c_uint64)


# bsd/net/route.h
class rt_metrics(Structure):
    _fields_ = [("rmx_locks", c_uint32), ("rmx_mtu", c_uint32), ("rmx_hopcount", c_uint32),
                ("rmx_expire", c_int32), ("rmx_recvpipe", c_uint32), ("rmx_sendpipe", c_uint32),
                ("rmx_ssthresh", c_uint32), ("rmx_rtt", c_uint32), ("rmx_rttvar", c_uint32),
                ("rmx_pksent", c_uint32), ("rmx_filler", c_uint32 * 4)]


class rt_msghdr(Structure):
    _fields_ = [("rtm_msglen", c_ushort), ("rtm_version", c_ubyte), ("rtm_type", c_ubyte),
                ("rtm_index", c_ushort), ("rtm_flags", c_int), ("rtm_addrs", c_int),
                ("rtm_pid", c_int32), ("rtm_seq", c_int), ("rtm_errno", c_int), ("rtm_use", c_int),
                ("rtm_inits", c_uint32), ("rtm_rmx", rt_metrics)]


class in_addr(Structure):
    _fields_ = [("s_addr", c_uint32)]  # network byte order in memory


class in6_addr(Union):  # bsd/netinet6/in6.h: the __u6_addr union
    _fields_ = [("s6_addr", c_ubyte * 16), ("s6_addr16", c_uint16 * 8), ("s6_addr32", c_uint32 * 4)]


class sockaddr_in(Structure):  # bsd/netinet/in.h
    _fields_ = [("sin_len", c_ubyte), ("sin_family", c_ubyte), ("sin_port", c_ushort),
                ("sin_addr", in_addr), ("sin_zero", c_char * 8)]


class sockaddr_in6(Structure):
    _fields_ = [("sin6_len", c_ubyte), ("sin6_family", c_ubyte), ("sin6_port", c_ushort),
                ("sin6_flowinfo", c_uint32), ("sin6_addr", in6_addr), ("sin6_scope_id", c_uint32)]


class sockaddr_dl(Structure):  # bsd/net/if_dl.h
    _fields_ = [("sdl_len", c_ubyte), ("sdl_family", c_ubyte), ("sdl_index", c_ushort),
                ("sdl_type", c_ubyte), ("sdl_nlen", c_ubyte), ("sdl_alen", c_ubyte),
                ("sdl_slen", c_ubyte), ("sdl_data", c_char * 12)]


# bsd/netinet/in_pcb.h and bsd/sys/socketvar.h, inside #pragma pack(4).
class xinpgen(Structure):
    _pack_ = 4
    _fields_ = [("xig_len", c_uint32), ("xig_count", c_uint), ("xig_gen", c_uint64),
                ("xig_sogen", c_uint64)]


class in_addr_4in6(Structure):
    _fields_ = [("ia46_pad32", c_uint32 * 3), ("ia46_addr4", in_addr)]


class inp_dependaddr(Union):
    _fields_ = [("inp46", in_addr_4in6), ("inp6", in6_addr)]


class inp_depend4(Structure):
    _pack_ = 4
    _fields_ = [("inp4_ip_tos", c_ubyte)]


class inp_depend6(Structure):
    _pack_ = 4
    _fields_ = [("inp6_hlim", c_ubyte), ("inp6_cksum", c_int), ("inp6_ifindex", c_ushort),
                ("inp6_hops", c_short)]


class xinpcb_n(Structure):
    _pack_ = 4
    _fields_ = [("xi_len", c_uint32), ("xi_kind", c_uint32), ("xi_inpp", c_uint64),
                ("inp_fport", c_ushort), ("inp_lport", c_ushort), ("inp_ppcb", c_uint64),
                ("inp_gencnt", c_uint64), ("inp_flags", c_int), ("inp_flow", c_uint32),
                ("inp_vflag", c_ubyte), ("inp_ip_ttl", c_ubyte), ("inp_ip_p", c_ubyte),
                ("inp_dependfaddr", inp_dependaddr), ("inp_dependladdr", inp_dependaddr),
                ("inp_depend4", inp_depend4), ("inp_depend6", inp_depend6),
                ("inp_flowhash", c_uint32), ("inp_flags2", c_uint32)]


_XSOCKET_N_7195 = [
    ("xso_len", c_uint32), ("xso_kind", c_uint32), ("xso_so", c_uint64), ("so_type", c_short),
    ("so_options", c_uint32), ("so_linger", c_short), ("so_state", c_short),
    ("so_pcb", c_uint64), ("xso_protocol", c_int), ("xso_family", c_int), ("so_qlen", c_short),
    ("so_incqlen", c_short), ("so_qlimit", c_short), ("so_timeo", c_short),
    ("so_error", c_ushort), ("so_pgid", c_int32), ("so_oobmark", c_uint32), ("so_uid", c_uint32),
    ("so_last_pid", c_int32), ("so_e_pid", c_int32)]


class xsocket_n(Structure):  # since xnu-8792 (macOS 13)
    _pack_ = 4
    _fields_ = _XSOCKET_N_7195 + [
        ("so_gencnt", c_uint64), ("so_flags", c_uint32), ("so_flags1", c_uint32),
        ("so_usecount", c_int32), ("so_retaincnt", c_int32), ("xso_filter_flags", c_uint32)]


class xsocket_n_7195(Structure):  # up to xnu-8020 (macOS 12)
    _pack_ = 4
    _fields_ = _XSOCKET_N_7195


class xsockbuf_n(Structure):
    _pack_ = 4
    _fields_ = [("xsb_len", c_uint32), ("xsb_kind", c_uint32), ("sb_cc", c_uint32),
                ("sb_hiwat", c_uint32), ("sb_mbcnt", c_uint32), ("sb_mbmax", c_uint32),
                ("sb_lowat", c_int32), ("sb_flags", c_short), ("sb_timeo", c_short)]


class data_stats(Structure):  # outside the pack(4) region
    _fields_ = [("rxpackets", c_uint64), ("rxbytes", c_uint64), ("txpackets", c_uint64),
                ("txbytes", c_uint64)]


class xsockstat_n(Structure):
    _pack_ = 4
    _fields_ = [("xst_len", c_uint32), ("xst_kind", c_uint32),
                ("xst_tc_stats", data_stats * 4)]  # SO_TC_STATS_MAX


class xtcpcb_n(Structure):  # bsd/netinet/tcp_var.h, #pragma pack(4); TCPT_NTIMERS_EXT 4
    _pack_ = 4
    _fields_ = [("xt_len", c_uint32), ("xt_kind", c_uint32), ("t_segq", c_uint64),
                ("t_dupacks", c_int), ("t_timer", c_int * 4), ("t_state", c_int),
                ("t_flags", c_uint), ("t_force", c_int)] + [
        (f, c_uint32) for f in ("snd_una", "snd_max", "snd_nxt", "snd_up", "snd_wl1", "snd_wl2",
                                "iss", "irs", "rcv_nxt", "rcv_adv", "rcv_wnd", "rcv_up",
                                "snd_wnd", "snd_cwnd", "snd_ssthresh", "t_maxopd", "t_rcvtime",
                                "t_starttime")] + [
        ("t_rtttime", c_int), ("t_rtseq", c_uint32), ("t_rxtcur", c_int), ("t_maxseg", c_uint),
        ("t_srtt", c_int), ("t_rttvar", c_int), ("t_rxtshift", c_int), ("t_rttmin", c_uint),
        ("t_rttupdated", c_uint32), ("max_sndwnd", c_uint32), ("t_softerror", c_int),
        ("t_oobflags", c_char), ("t_iobc", c_char), ("snd_scale", c_ubyte),
        ("rcv_scale", c_ubyte), ("request_r_scale", c_ubyte), ("requested_s_scale", c_ubyte),
        ("ts_recent", c_uint32), ("ts_recent_age", c_uint32), ("last_ack_sent", c_uint32),
        ("cc_send", c_uint32), ("cc_recv", c_uint32), ("snd_recover", c_uint32),
        ("snd_cwnd_prev", c_uint32), ("snd_ssthresh_prev", c_uint32)]


def test_layout_sizes() -> None:
    """sizeof of each structure, from the headers' field lists (xnu-11417.121.6 unless said)."""
    # 229 u_int32_t, 4 bytes of padding, 6 u_int64_t, 6 u_int32_t.
    assert sizeof(Tcpstat) == 992
    # xnu-7195.141.2: 221 u_int32_t, 4 bytes of padding, 6 u_int64_t, 5 u_int32_t, 4 bytes of
    # padding to the alignment of u_int64_t.
    assert sizeof(Tcpstat7195) == 960
    assert sizeof(Udpstat) == 88  # 22 u_int32_t
    assert sizeof(Ipstat) == 196  # 49 u_int32_t (46, 184 bytes, before xnu-11215)
    assert sizeof(Ip6stat) == 449 * 8  # 449 u_quad_t, arrays counted out
    assert sizeof(rt_metrics) == 56 and sizeof(rt_msghdr) == 92 == decode.RT_MSGHDR.size
    assert (sizeof(sockaddr_in), sizeof(sockaddr_in6), sizeof(sockaddr_dl)) == (16, 28, 20)
    assert sizeof(xinpgen) == 24 == decode.XINPGEN.size
    assert sizeof(xinpcb_n) == 104
    assert sizeof(xsocket_n) == 104 and sizeof(xsocket_n_7195) == 76
    assert (sizeof(xsockbuf_n), sizeof(xsockstat_n), sizeof(xtcpcb_n)) == (32, 136, 204)
    # The fields the decoders read sit where decode.py says.
    assert xinpcb_n.inp_fport.offset == 16 and xinpcb_n.inp_lport.offset == 18
    assert (xinpcb_n.inp_gencnt.offset, xinpcb_n.inp_vflag.offset) == (28, 44)
    assert (xinpcb_n.inp_dependfaddr.offset, xinpcb_n.inp_dependladdr.offset) == (48, 64)
    assert (xsocket_n.xso_so.offset, xsocket_n.xso_protocol.offset, xsocket_n.so_uid.offset) \
        == (8, 36, 64)
    assert xtcpcb_n.t_state.offset == 36
    # The decoders read a prefix that every release lays out alike.
    assert tuple(TCPSTAT_11417.split()[:89]) == tuple(TCPSTAT_7195.split()[:89]) \
        == decode.TCPSTAT_FIELDS
    assert tuple(UDPSTAT.split()[:14]) == decode.UDPSTAT_FIELDS
    assert tuple(IPSTAT.split()[:25]) == decode.IPSTAT_FIELDS
    assert len(decode.IP6STAT_FIELDS) * 8 == Ip6stat.toomanyhdr.offset + 8


# --- the statistics ------------------------------------------------------------------------------

def filled(cls: Type[Structure], **values: int) -> Structure:
    """``cls`` with every counter distinct (the n-th scalar field 100000 + 17 n; arrays' items
    likewise), then ``values`` set."""
    s = cls()
    n = 0
    for name, typ in cls._fields_:  # type: ignore[attr-defined]
        if hasattr(typ, "_length_"):
            arr = getattr(s, name)
            for i in range(typ._length_):
                arr[i] = 100000 + 17 * n
                n += 1
        else:
            setattr(s, name, 100000 + 17 * n)
            n += 1
    for k, v in values.items():
        setattr(s, k, v)
    return s


TCP_VALUES = dict(connattempt=11508, accepts=10784, conndrops=623, drops=2085, rcvtotal=123535,
                  sndtotal=120064, sndrexmitpack=24, rcvbadsum=3, rcvbadoff=5, rcvshort=7,
                  listendrop=41, rexmttimeo=59)


def test_tcp_stats_linux_names_and_tcp_darwin() -> None:
    s = filled(Tcpstat, **TCP_VALUES)
    got = decode.tcp_stats(bytes(s))
    assert got["Tcp"] == {"ActiveOpens": 11508, "PassiveOpens": 10784, "InSegs": 123535,
                          "OutSegs": 120040, "RetransSegs": 24, "InErrs": 15,
                          "InCsumErrors": 3}
    darwin = got["TcpDarwin"]
    assert darwin == {f: getattr(s, f) for f in decode.TCP_DARWIN}
    assert (darwin["conndrops"], darwin["drops"], darwin["listendrop"],
            darwin["rexmttimeo"]) == (623, 2085, 41, 59)
    # Read by name from the structure: the offsets are the header's.
    assert darwin["sack_sboverflow"] == s.sack_sboverflow and darwin["connects"] == s.connects
    # Never counted by xnu, or exported under a Linux name: not repeated.
    assert not {"sc_sendcookie", "pcbcachemiss", "hc_added", "connattempt", "rcvtotal"} & set(darwin)
    # Every TcpDarwin field has its row in the protocols table, and only those.
    assert {f for g, f in TABLE if g == "TcpDarwin"} == set(decode.TCP_DARWIN)


def test_tcp_stats_of_an_older_release_read_the_same() -> None:
    """macOS 11's struct tcpstat differs after the prefix read: the same values come out."""
    new, old = filled(Tcpstat, **TCP_VALUES), filled(Tcpstat7195, **TCP_VALUES)
    for f in decode.TCPSTAT_FIELDS:
        setattr(old, f, getattr(new, f))
    assert decode.tcp_stats(bytes(old)) == decode.tcp_stats(bytes(new))


def test_out_segs_and_delivered_wrap_as_32_bit_counters() -> None:
    s = filled(Tcpstat, sndtotal=5, sndrexmitpack=10)  # sndtotal wrapped, retransmits not yet
    assert decode.tcp_stats(bytes(s))["Tcp"]["OutSegs"] == 2**32 - 5


def test_udp_stats() -> None:
    s = filled(Udpstat, ipackets=9000, hdrops=1, badsum=2, badlen=3, noport=40, noportbcast=50,
               fullsock=6, noportmcast=7, opackets=8000)
    assert decode.udp_stats(bytes(s)) == {"Udp": {
        "InDatagrams": 9000 - 1 - 3 - 2 - 40 - 50 - 6, "NoPorts": 33, "InErrors": 12,
        "OutDatagrams": 8000, "RcvbufErrors": 6, "InCsumErrors": 2, "IgnoredMulti": 57}}


def test_ip_stats() -> None:
    s = filled(Ipstat, total=5000, badsum=1, tooshort=2, badhlen=3, badlen=4, badvers=5,
               badoptions=6, forward=7, noproto=8, delivered=4900, localout=4000, rawout=11,
               odropped=12, noroute=13, fragments=14, reassembled=15, fragmented=16,
               cantfrag=17, ofragments=18)
    assert decode.ip_stats(bytes(s), forwarding=0, ttl=64) == {
        "Ip": {"Forwarding": 2, "DefaultTTL": 64, "InReceives": 5000, "InHdrErrors": 19,
               "ForwDatagrams": 7, "InUnknownProtos": 8, "InDelivers": 4900,
               "OutRequests": 4011, "OutDiscards": 12, "OutNoRoutes": 13, "ReasmReqds": 14,
               "ReasmOKs": 15, "FragOKs": 16, "FragFails": 17, "FragCreates": 18},
        "IpExt": {"InTruncatedPkts": 2, "InCsumErrors": 1}}
    got = decode.ip_stats(bytes(s), forwarding=1)
    assert got["Ip"]["Forwarding"] == 1 and "DefaultTTL" not in got["Ip"]
    # The 184-byte struct of releases before xnu-11215 holds every field read.
    assert decode.ip_stats(bytes(s)[:184]) == decode.ip_stats(bytes(s))


def test_ip6_stats() -> None:
    s = filled(Ip6stat, total=2**40 + 1, tooshort=2, badvers=3, badoptions=4, toomanyhdr=5,
               delivered=2**40, forward=6, localout=7, odropped=8, noroute=9, fragments=10,
               reassembled=11, fragmented=12, cantfrag=13, ofragments=14)
    assert decode.ip6_stats(bytes(s)) == {"Ip6": {
        "InReceives": 2**40 + 1, "InHdrErrors": 12, "InTruncatedPkts": 2, "InDelivers": 2**40,
        "OutForwDatagrams": 6, "OutRequests": 7, "OutDiscards": 8, "OutNoRoutes": 9,
        "ReasmReqds": 10, "ReasmOKs": 11, "FragOKs": 12, "FragFails": 13, "FragCreates": 14}}


@pytest.mark.parametrize("fn,cls,need", [
    (decode.tcp_stats, Tcpstat, 89 * 4), (decode.udp_stats, Udpstat, 14 * 4),
    (decode.ip_stats, Ipstat, 25 * 4), (decode.ip6_stats, Ip6stat, 318 * 8)])
def test_short_statistics_are_refused(fn: Callable[[bytes], Any], cls: Type[Structure],
                                      need: int) -> None:
    raw = bytes(filled(cls))
    fn(raw[:need])  # exactly the fields read: enough
    with pytest.raises(decode.DecodeError, match=f"{need - 1} bytes, shorter than the {need}"):
        fn(raw[:need - 1])


def test_int_sysctl_and_withheld() -> None:
    assert decode.int32(struct.pack("<i", 64), "net.inet.ip.ttl") == 64
    with pytest.raises(decode.DecodeError, match="net.inet.ip.ttl: expected a 4-byte int"):
        decode.int32(b"\0" * 8, "net.inet.ip.ttl")
    assert decode.withheld(bytes(Tcpstat())) and not decode.withheld(bytes(filled(Tcpstat)))


# --- routes --------------------------------------------------------------------------------------

AF_INET, AF_INET6, AF_LINK = 2, 30, 18
RTF_UP, RTF_GATEWAY, RTF_HOST, RTF_STATIC = 0x1, 0x2, 0x4, 0x800
RTF_CLONING, RTF_LLINFO, RTF_WASCLONED, RTF_PRCLONING, RTF_IFSCOPE = \
    0x100, 0x400, 0x20000, 0x10000, 0x1000000


def sin(addr: str, length: int = 16) -> bytes:
    """A sockaddr_in; a shorter ``length`` is how the kernel writes netmasks (cut after the
    last non-zero byte, sa_len saying so)."""
    sa = sockaddr_in(sin_len=length, sin_family=AF_INET)
    sa.sin_addr.s_addr = int.from_bytes(socket.inet_aton(addr), "little")
    return bytes(sa)[:length]


def sin6(addr: str, length: int = 28, scope: int = 0) -> bytes:
    """A sockaddr_in6; ``scope`` is embedded in bytes 2-3 of the address, as KAME does."""
    sa = sockaddr_in6(sin6_len=length, sin6_family=AF_INET6)
    raw = bytearray(socket.inet_pton(socket.AF_INET6, addr))
    raw[2:4] = scope.to_bytes(2, "big") if scope else raw[2:4]
    sa.sin6_addr.s6_addr[:] = list(raw)
    return bytes(sa)[:length]


def sdl(index: int) -> bytes:
    return bytes(sockaddr_dl(sdl_len=20, sdl_family=AF_LINK, sdl_index=index, sdl_type=6))


def rtmsg(index: int, flags: int, dst: Optional[bytes], gateway: Optional[bytes] = None,
          netmask: Optional[bytes] = None, ifa: Optional[bytes] = None,
          version: int = 5) -> bytes:
    """One routing message as sysctl_dumpentry writes it: rt_msghdr, then the sockaddrs of
    rtm_addrs in RTAX order, each padded to 4 bytes (ROUNDUP32; 4 for an empty one)."""
    body = b""
    addrs = 0
    for bit, sa in ((1, dst), (2, gateway), (4, netmask), (0x20, ifa)):
        if sa is None:
            continue
        addrs |= bit
        body += sa + b"\0" * (decode._roundup32(len(sa)) - len(sa))
    h = rt_msghdr(rtm_msglen=sizeof(rt_msghdr) + len(body), rtm_version=version, rtm_type=4,
                  rtm_index=index, rtm_flags=flags, rtm_addrs=addrs, rtm_use=77)
    h.rtm_rmx.rmx_mtu = 1500
    return bytes(h) + body


ROUTE_MSGS = [
    # default 192.168.1.1 UGScg en0: the netmask of /0 is an empty sockaddr.
    rtmsg(4, RTF_UP | RTF_GATEWAY | RTF_STATIC | RTF_PRCLONING, sin("0.0.0.0"),
          sin("192.168.1.1"), b"\0"),
    # The same default, scoped to en0 (UGScIg): kept, as netstat -rn lists it.
    rtmsg(4, RTF_UP | RTF_GATEWAY | RTF_STATIC | RTF_IFSCOPE, sin("0.0.0.0"), sin("192.168.1.1"),
          b"\0"),
    # 127 UCS lo0: a net route, netmask 255.0.0.0 cut to 5 bytes.
    rtmsg(1, RTF_UP | RTF_STATIC | RTF_CLONING, sin("127.0.0.0"), sin("127.0.0.1"),
          sin("255.0.0.0", 5)),
    # 127.0.0.1 UH lo0: a host route with a gateway sockaddr but no RTF_GATEWAY.
    rtmsg(1, RTF_UP | RTF_HOST, sin("127.0.0.1"), sin("127.0.0.1")),
    # 192.168.1 link#4 UCS en0: an interface route, gateway a sockaddr_dl.
    rtmsg(4, RTF_UP | RTF_STATIC | RTF_CLONING, sin("192.168.1.0"), sdl(4),
          sin("255.255.255.0", 7), sin("192.168.1.20")),
    # 192.168.1.1 <mac> UHLWIi en0: an ARP entry, cloned from the route above: left out.
    rtmsg(4, RTF_UP | RTF_HOST | RTF_LLINFO | RTF_WASCLONED, sin("192.168.1.1"), sdl(4)),
    # A static ARP entry (arp -s): neighbour, not route.
    rtmsg(4, RTF_UP | RTF_HOST | RTF_LLINFO | RTF_STATIC, sin("192.168.1.9"), sdl(4)),
    # A protocol-cloned host route (netstat -rn hides it without -a): left out.
    rtmsg(4, RTF_UP | RTF_GATEWAY | RTF_HOST | RTF_WASCLONED, sin("203.0.113.5"),
          sin("192.168.1.1")),
    # 10.8/16 via a tunnel whose interface has gone (index 9 unknown): interface "".
    rtmsg(9, RTF_UP | RTF_GATEWAY, sin("10.8.0.0"), sin("10.8.0.1"), sin("255.255.0.0", 6)),
    # A message of another version: skipped, as rtm_msglen lets a reader skip it.
    rtmsg(4, RTF_UP, sin("198.51.100.0"), None, sin("255.255.255.0", 7), version=4),
    # default fe80::1%en0 UGcg en0: the gateway's scope is embedded in bytes 2-3.
    rtmsg(4, RTF_UP | RTF_GATEWAY, sin6("::"), sin6("fe80::1", scope=4), b"\0"),
    # ::1 UHL lo0: host route, no netmask.
    rtmsg(1, RTF_UP | RTF_HOST, sin6("::1"), sin6("::1")),
    # 2001:db8:1::/64 link#4 UC en0: netmask cut to 16 bytes (8 of address).
    rtmsg(4, RTF_UP | RTF_CLONING, sin6("2001:db8:1::"), sdl(4), sin6("ffff:ffff:ffff:ffff::", 16)),
    # fe80::%en0/64 UCI en0: the kernel scrubs a destination's scope; the decoder does too.
    rtmsg(4, RTF_UP | RTF_CLONING | RTF_IFSCOPE, sin6("fe80::", scope=4), sdl(4),
          sin6("ffff:ffff:ffff:ffff::", 16)),
    # An AF_LINK table entry: not a route of either family.
    rtmsg(4, RTF_UP, sdl(4), sdl(4)),
]
IFNAMES = {1: "lo0", 4: "en0"}


def ifname(index: int) -> str:
    try:
        return IFNAMES[index]
    except KeyError:
        raise OSError(errno.ENXIO, "no such interface") from None


EXPECTED_ROUTES = [
    Route("ipv4", "0.0.0.0/0", "192.168.1.1", "en0", 0,
          RTF_UP | RTF_GATEWAY | RTF_STATIC | RTF_PRCLONING),
    Route("ipv4", "0.0.0.0/0", "192.168.1.1", "en0", 0,
          RTF_UP | RTF_GATEWAY | RTF_STATIC | RTF_IFSCOPE),
    Route("ipv4", "127.0.0.0/8", "", "lo0", 0, RTF_UP | RTF_STATIC | RTF_CLONING),
    Route("ipv4", "127.0.0.1/32", "", "lo0", 0, RTF_UP | RTF_HOST),
    Route("ipv4", "192.168.1.0/24", "", "en0", 0, RTF_UP | RTF_STATIC | RTF_CLONING),
    Route("ipv4", "10.8.0.0/16", "10.8.0.1", "", 0, RTF_UP | RTF_GATEWAY),
    Route("ipv6", "::/0", "fe80::1", "en0", 0, RTF_UP | RTF_GATEWAY),
    Route("ipv6", "::1/128", "", "lo0", 0, RTF_UP | RTF_HOST),
    Route("ipv6", "2001:db8:1::/64", "", "en0", 0, RTF_UP | RTF_CLONING),
    Route("ipv6", "fe80::/64", "", "en0", 0, RTF_UP | RTF_CLONING | RTF_IFSCOPE),
]


def test_routes() -> None:
    assert decode.routes(b"".join(ROUTE_MSGS), ifname) == EXPECTED_ROUTES
    assert decode.routes(b"", ifname) == []


def test_routes_truncated_or_malformed() -> None:
    buf = b"".join(ROUTE_MSGS)
    with pytest.raises(decode.DecodeError, match=r"message at offset \d+ says \d+ bytes"):
        decode.routes(buf[:-3], ifname)
    with pytest.raises(decode.DecodeError, match="1 stray bytes"):
        decode.routes(buf + b"\x01", ifname)
    short = bytearray(ROUTE_MSGS[0])
    struct.pack_into("<H", short, 0, 60)  # a length shorter than its own header
    with pytest.raises(decode.DecodeError, match="says 60 bytes"):
        decode.routes(bytes(short), ifname)
    lying = bytearray(ROUTE_MSGS[3])
    lying[sizeof(rt_msghdr) + 16] = 200  # the gateway claims 200 bytes
    with pytest.raises(decode.DecodeError, match="sockaddr 1 at offset .* runs past the end"):
        decode.routes(bytes(lying), ifname)


# --- the socket tables ---------------------------------------------------------------------------

# xnu's TCPS_* numbers (bsd/netinet/tcp_fsm.h).
TCPS = dict(CLOSED=0, LISTEN=1, SYN_SENT=2, SYN_RECEIVED=3, ESTABLISHED=4, CLOSE_WAIT=5,
            FIN_WAIT_1=6, CLOSING=7, LAST_ACK=8, FIN_WAIT_2=9, TIME_WAIT=10)
INP_IPV4, INP_IPV6 = 1, 2
XSO = dict(SOCKET=1, RCVBUF=2, SNDBUF=4, STATS=8, INPCB=0x10, TCPCB=0x20)


def _pad(raw: bytes) -> bytes:
    return raw + b"\0" * (decode._roundup64(len(raw)) - len(raw))


def sock_items(proto: int, vflag: int, local: str, lport: int, remote: str, rport: int,
               state: Optional[int] = None, uid: int = 0, gencnt: int = 7,
               userland: bool = False, old_xsocket: bool = False) -> bytes:
    """One socket's items as get_pcblist_n writes them, each ROUNDUP64-padded."""
    xi = xinpcb_n(xi_len=sizeof(xinpcb_n), xi_kind=XSO["INPCB"], xi_inpp=0x1111, inp_ppcb=0x2222,
                  inp_gencnt=gencnt, inp_vflag=vflag, inp_ip_p=proto, inp_ip_ttl=64)
    xi.inp_lport, xi.inp_fport = socket.htons(lport), socket.htons(rport)
    for field, addr in (("inp_dependladdr", local), ("inp_dependfaddr", remote)):
        u = getattr(xi, field)
        if ":" in addr:
            u.inp6.s6_addr[:] = list(socket.inet_pton(socket.AF_INET6, addr))
        else:
            u.inp46.ia46_addr4.s_addr = int.from_bytes(socket.inet_aton(addr), "little")
    if userland:
        xi.xi_inpp = xi.inp_gencnt = 0
    so_cls = xsocket_n_7195 if old_xsocket else xsocket_n
    so = so_cls(xso_len=sizeof(so_cls), xso_kind=XSO["SOCKET"], xso_so=0 if userland else 0x3333,
                so_type=1 if proto == 6 else 2, xso_protocol=proto,
                xso_family=AF_INET6 if vflag & INP_IPV6 else AF_INET,
                so_uid=0 if userland else uid, so_last_pid=4242, so_e_pid=4242)
    rcv = xsockbuf_n(xsb_len=sizeof(xsockbuf_n), xsb_kind=XSO["RCVBUF"], sb_cc=10, sb_hiwat=131072)
    snd = xsockbuf_n(xsb_len=sizeof(xsockbuf_n), xsb_kind=XSO["SNDBUF"], sb_cc=20, sb_hiwat=131072)
    st = xsockstat_n(xst_len=sizeof(xsockstat_n), xst_kind=XSO["STATS"])
    st.xst_tc_stats[0].rxbytes = 999
    out = b"".join(_pad(bytes(x)) for x in (xi, so, rcv, snd, st))
    if state is not None:
        out += _pad(bytes(xtcpcb_n(xt_len=sizeof(xtcpcb_n), xt_kind=XSO["TCPCB"], t_state=state,
                                   snd_cwnd=14480)))
    return out


def head(count: int, gen: int) -> bytes:
    return bytes(xinpgen(xig_len=sizeof(xinpgen), xig_count=count, xig_gen=gen, xig_sogen=5))


def pcblist_buf(items: Sequence[bytes], gen: int = 100, tail_gen: Optional[int] = None) -> bytes:
    return (head(len(items), gen) + b"".join(items)
            + head(len(items), gen if tail_gen is None else tail_gen))


TCP_SOCKETS = [
    # A connection accepted on 127.0.0.1:8080, listed before its listener and (a socket handed
    # to another user's process) of another uid: the listener's user is its own socket's.
    sock_items(6, INP_IPV4, "127.0.0.1", 8080, "127.0.0.1", 49999, TCPS["ESTABLISHED"], uid=0),
    sock_items(6, INP_IPV4, "0.0.0.0", 22, "0.0.0.0", 0, TCPS["LISTEN"], uid=0),
    # A dual-stack listener (netstat's tcp46): an AF_INET6 socket.
    sock_items(6, INP_IPV4 | INP_IPV6, "::", 80, "::", 0, TCPS["LISTEN"], uid=501),
    sock_items(6, INP_IPV4, "127.0.0.1", 8080, "0.0.0.0", 0, TCPS["LISTEN"], uid=501,
               old_xsocket=True),
    sock_items(6, INP_IPV4, "192.0.2.10", 22, "198.51.100.7", 50000, TCPS["ESTABLISHED"]),
    sock_items(6, INP_IPV6, "2001:db8::1", 443, "2001:db8::2", 51000, TCPS["TIME_WAIT"]),
    sock_items(6, INP_IPV4, "192.0.2.10", 50001, "203.0.113.1", 443, TCPS["SYN_SENT"], uid=501),
    sock_items(6, INP_IPV4, "192.0.2.10", 80, "203.0.113.2", 40000, TCPS["SYN_RECEIVED"]),
    sock_items(6, INP_IPV4, "192.0.2.10", 22, "198.51.100.8", 50002, TCPS["CLOSE_WAIT"]),
    sock_items(6, INP_IPV4, "192.0.2.10", 22, "198.51.100.9", 50003, TCPS["FIN_WAIT_1"]),
    sock_items(6, INP_IPV4, "192.0.2.10", 22, "198.51.100.10", 50004, TCPS["FIN_WAIT_2"]),
    sock_items(6, INP_IPV4, "192.0.2.10", 22, "198.51.100.11", 50005, TCPS["CLOSING"]),
    sock_items(6, INP_IPV4, "192.0.2.10", 22, "198.51.100.12", 50006, TCPS["LAST_ACK"]),
    sock_items(6, INP_IPV4, "0.0.0.0", 6000, "0.0.0.0", 0, TCPS["CLOSED"]),  # bound, idle
    # An IPv6 link-local connection: the scope KAME embeds in bytes 2-3 is not the address.
    sock_items(6, INP_IPV6, "fe80:4::1", 22, "fe80:4::2", 50007, TCPS["ESTABLISHED"]),
    # A flow of the user-space stack: no kernel socket, no uid.
    sock_items(6, INP_IPV6, "2001:db8::1", 443, "2001:db8::3", 52000, TCPS["ESTABLISHED"],
               userland=True),
    # Skipped as netstat skips them: created after the head's generation, of neither family,
    # of another protocol.
    sock_items(6, INP_IPV4, "192.0.2.10", 9, "192.0.2.11", 9, TCPS["ESTABLISHED"], gencnt=101),
    sock_items(6, 0, "0.0.0.0", 9, "0.0.0.0", 0, TCPS["LISTEN"]),
    sock_items(17, INP_IPV4, "0.0.0.0", 9, "0.0.0.0", 0, TCPS["LISTEN"]),
]
EXPECTED_TCP = [
    Conn("ipv4", names.TCP_ESTABLISHED, "127.0.0.1", 8080, "127.0.0.1", 49999, None, 0),
    Conn("ipv4", names.TCP_LISTEN, "0.0.0.0", 22, "0.0.0.0", 0, None, 0),
    Conn("ipv6", names.TCP_LISTEN, "::", 80, "::", 0, None, 501),
    Conn("ipv4", names.TCP_LISTEN, "127.0.0.1", 8080, "0.0.0.0", 0, None, 501),
    Conn("ipv4", names.TCP_ESTABLISHED, "192.0.2.10", 22, "198.51.100.7", 50000, None, 0),
    Conn("ipv6", names.TCP_TIME_WAIT, "2001:db8::1", 443, "2001:db8::2", 51000, None, 0),
    Conn("ipv4", names.TCP_SYN_SENT, "192.0.2.10", 50001, "203.0.113.1", 443, None, 501),
    Conn("ipv4", names.TCP_SYN_RECV, "192.0.2.10", 80, "203.0.113.2", 40000, None, 0),
    Conn("ipv4", names.TCP_CLOSE_WAIT, "192.0.2.10", 22, "198.51.100.8", 50002, None, 0),
    Conn("ipv4", names.TCP_FIN_WAIT1, "192.0.2.10", 22, "198.51.100.9", 50003, None, 0),
    Conn("ipv4", names.TCP_FIN_WAIT2, "192.0.2.10", 22, "198.51.100.10", 50004, None, 0),
    Conn("ipv4", names.TCP_CLOSING, "192.0.2.10", 22, "198.51.100.11", 50005, None, 0),
    Conn("ipv4", names.TCP_LAST_ACK, "192.0.2.10", 22, "198.51.100.12", 50006, None, 0),
    Conn("ipv4", names.TCP_CLOSE, "0.0.0.0", 6000, "0.0.0.0", 0, None, 0),
    Conn("ipv6", names.TCP_ESTABLISHED, "fe80::1", 22, "fe80::2", 50007, None, 0),
    Conn("ipv6", names.TCP_ESTABLISHED, "2001:db8::1", 443, "2001:db8::3", 52000, None, None),
]
UDP_SOCKETS = [
    sock_items(17, INP_IPV4, "0.0.0.0", 53, "0.0.0.0", 0, uid=0),
    sock_items(17, INP_IPV4 | INP_IPV6, "::", 5353, "::", 0, uid=65),
    sock_items(17, INP_IPV4, "10.0.0.5", 40000, "10.0.0.1", 53, uid=501),
    sock_items(17, INP_IPV6, "2001:db8::5", 40001, "2001:db8::53", 53, uid=501),
]
EXPECTED_UDP = [
    Conn("ipv4", names.TCP_CLOSE, "0.0.0.0", 53, "0.0.0.0", 0, None, 0),
    Conn("ipv6", names.TCP_CLOSE, "::", 5353, "::", 0, None, 65),
    Conn("ipv4", names.TCP_ESTABLISHED, "10.0.0.5", 40000, "10.0.0.1", 53, None, 501),
    Conn("ipv6", names.TCP_ESTABLISHED, "2001:db8::5", 40001, "2001:db8::53", 53, None, 501),
]


def test_pcblist_tcp_every_state_both_families() -> None:
    got = decode.pcblist(pcblist_buf(TCP_SOCKETS), "tcp")
    assert got == decode.PcbList(EXPECTED_TCP, False)
    # Every TCPS_* state, in Linux's numbering.
    linux = {"CLOSED": names.TCP_CLOSE, "LISTEN": names.TCP_LISTEN,
             "SYN_SENT": names.TCP_SYN_SENT, "SYN_RECEIVED": names.TCP_SYN_RECV,
             "ESTABLISHED": names.TCP_ESTABLISHED, "CLOSE_WAIT": names.TCP_CLOSE_WAIT,
             "FIN_WAIT_1": names.TCP_FIN_WAIT1, "CLOSING": names.TCP_CLOSING,
             "LAST_ACK": names.TCP_LAST_ACK, "FIN_WAIT_2": names.TCP_FIN_WAIT2,
             "TIME_WAIT": names.TCP_TIME_WAIT}
    for xnu_name, number in TCPS.items():
        assert decode.TCP_STATES[number] == linux[xnu_name], xnu_name
    assert len(decode.TCP_STATES) == len(TCPS)


def test_pcblist_udp_connected_or_not() -> None:
    assert decode.pcblist(pcblist_buf(UDP_SOCKETS), "udp") == decode.PcbList(EXPECTED_UDP, False)


def test_pcblist_empty_and_changed_generation() -> None:
    # No sockets: get_pcblist_n writes the head only.
    assert decode.pcblist(head(0, 9), "udp") == decode.PcbList([], False)
    assert decode.pcblist(pcblist_buf([], 9), "udp") == decode.PcbList([], False)
    got = decode.pcblist(pcblist_buf(UDP_SOCKETS, gen=100, tail_gen=102), "udp")
    assert got.changed and got.conns == EXPECTED_UDP


def test_pcblist_truncated_or_malformed() -> None:
    buf = pcblist_buf(TCP_SOCKETS)
    with pytest.raises(decode.DecodeError, match="shorter than its head xinpgen"):
        decode.pcblist(buf[:20], "tcp")
    with pytest.raises(decode.DecodeError, match=r"runs past the end of the \d+-byte buffer "
                                                 r"\(truncated\)"):
        decode.pcblist(buf[:24 + 300], "tcp")
    with pytest.raises(decode.DecodeError, match="no tail xinpgen"):
        decode.pcblist(buf[:-24], "tcp")
    with pytest.raises(decode.DecodeError, match="not a whole socket"):
        decode.pcblist(head(1, 100) + TCP_SOCKETS[1][:-208] + head(1, 100), "tcp")
    bad = pcblist_buf([sock_items(6, INP_IPV4, "0.0.0.0", 1, "0.0.0.0", 0, 57)])
    with pytest.raises(decode.DecodeError, match="t_state 57 at offset .* is no TCPS_"):
        decode.pcblist(bad, "tcp")
    short = bytearray(pcblist_buf([TCP_SOCKETS[1]]))
    struct.pack_into("<I", short, 24, 40)  # an xinpcb_n of 40 bytes: too short to read
    with pytest.raises(decode.DecodeError, match="kind 0x10 at offset 24 is 40 bytes, shorter"):
        decode.pcblist(bytes(short), "tcp")
    wrong = bytearray(head(0, 1))
    struct.pack_into("<I", wrong, 0, 16)
    with pytest.raises(decode.DecodeError, match="head xinpgen says 16 bytes"):
        decode.pcblist(bytes(wrong), "tcp")


# --- the system, through the collectors ----------------------------------------------------------

def tcpstat_bytes() -> bytes:
    return bytes(filled(Tcpstat, **TCP_VALUES))


class FakeSysctl:
    """sysctlbyname and the routing sysctl answered from bytes built above; counts reads."""

    def __init__(self) -> None:
        self.values: Dict[str, Any] = {
            "net.inet.tcp.stats": tcpstat_bytes(),
            "net.inet.udp.stats": bytes(filled(Udpstat, ipackets=9000, hdrops=1, badsum=2,
                                               badlen=3, noport=40, noportbcast=50, fullsock=6,
                                               noportmcast=7, opackets=8000)),
            "net.inet.ip.stats": bytes(filled(Ipstat, total=5000)),
            "net.inet6.ip6.stats": bytes(filled(Ip6stat, total=777)),
            "net.inet.ip.forwarding": struct.pack("<i", 0),
            "net.inet.ip.ttl": struct.pack("<i", 64),
            "net.inet.tcp.pcblist_n": pcblist_buf(TCP_SOCKETS),
            "net.inet.udp.pcblist_n": pcblist_buf(UDP_SOCKETS),
        }
        self.reads: Dict[str, int] = {}
        self.route = b"".join(ROUTE_MSGS)

    def by_name(self, name: str, table: bool = False) -> bytes:
        self.reads[name] = self.reads.get(name, 0) + 1
        v = self.values.get(name)
        if v is None:
            raise darwin_sysctl.SysctlError(errno.ENOENT, f"sysctl {name}: no such name")
        if isinstance(v, list):  # successive reads
            return bytes(v.pop(0) if len(v) > 1 else v[0])
        return bytes(v)

    def route_dump(self) -> bytes:
        return self.route


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSysctl]:
    """A fresh DarwinSystem whose sysctls are answered by FakeSysctl and whose psutil may not
    list sockets (macOS without root)."""
    f = FakeSysctl()
    monkeypatch.setattr(darwin_sysctl, "by_name", f.by_name)
    monkeypatch.setattr(darwin_sysctl, "route_dump", f.route_dump)
    monkeypatch.setattr(_darwin, "if_indextoname", ifname)
    calls = []

    def denied(kind: str = "inet") -> List[Any]:
        calls.append(kind)
        raise psutil.AccessDenied(pid=1)

    monkeypatch.setattr(psutil, "net_connections", denied)
    f.psutil_calls = calls  # type: ignore[attr-defined]
    system.load_named.cache_clear()
    yield f
    system.load_named.cache_clear()


def scrape(**options: Any) -> List[Tuple[str, Dict[str, str], float]]:
    cfg = Config(system="darwin", disable_exporter_metrics=True,
                 collectors=frozenset({"sockets", "listeners", "protocols", "routes"}),
                 options={"protocols": ProtocolsOptions(**options.get("protocols", {})),
                          "routes": RoutesOptions(table=True),
                          "listeners": ListenersOptions(connections=True)})
    return parse(dump.render(Exporter(cfg).target()).decode())


def user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def warnings(caplog: pytest.LogCaptureFixture) -> List[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_system_without_root_reads_pcblist_and_says_so_once(
        fake: FakeSysctl, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    host = system.load_named("darwin")
    assert isinstance(host, _darwin.DarwinSystem) and host.name == "darwin"
    assert host.connections("tcp") == EXPECTED_TCP
    assert host.connections("udp") == EXPECTED_UDP
    # psutil was asked once: the privilege does not come back while running.
    assert fake.psutil_calls == ["tcp"]  # type: ignore[attr-defined]
    said = warnings(caplog)
    assert len(said) == 1, said
    assert "net.inet.tcp.pcblist_n" in said[0] and "not attributed" in said[0]
    assert said[0].endswith("run the exporter as root (a launchd daemon, see deploy/macos/)")


def test_system_with_root_uses_psutil(fake: FakeSysctl, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    sconn = collections.namedtuple("sconn", "fd family type laddr raddr status pid")
    conn = sconn(3, socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 631), (), "LISTEN", 77)
    monkeypatch.setattr(psutil, "net_connections", lambda kind="inet": [conn])
    host = system.load_named("darwin")
    assert host.connections("tcp") == [
        Conn("ipv4", names.TCP_LISTEN, "127.0.0.1", 631, "0.0.0.0", 0, 77)]
    assert "net.inet.tcp.pcblist_n" not in fake.reads and not warnings(caplog)


def test_pcblist_read_again_while_the_generation_changes(fake: FakeSysctl) -> None:
    host = _darwin.DarwinSystem()
    changed = pcblist_buf(UDP_SOCKETS[:1], gen=100, tail_gen=101)
    fake.values["net.inet.udp.pcblist_n"] = [changed, pcblist_buf(UDP_SOCKETS)]
    assert host.pcblist("udp") == EXPECTED_UDP
    assert fake.reads["net.inet.udp.pcblist_n"] == 2
    fake.values["net.inet.udp.pcblist_n"] = [changed]  # never settles: the last read is taken
    assert host.pcblist("udp") == EXPECTED_UDP[:1]
    assert fake.reads["net.inet.udp.pcblist_n"] == 2 + _darwin.PCBLIST_READS


def test_protocol_tables(fake: FakeSysctl) -> None:
    snmp, netstat, snmp6 = _darwin.DarwinSystem().protocol_tables()
    assert snmp is not None and netstat is not None and snmp6 is not None
    assert list(snmp) == ["Ip", "Tcp", "Udp"] and list(netstat) == ["IpExt", "TcpDarwin"]
    assert snmp["Ip"]["Forwarding"] == 2 and snmp["Ip"]["DefaultTTL"] == 64
    assert snmp["Tcp"] == decode.tcp_stats(tcpstat_bytes())["Tcp"]
    assert snmp6 == {"Ip6": decode.ip6_stats(fake.values["net.inet6.ip6.stats"])["Ip6"]}
    del fake.values["net.inet6.ip6.stats"], fake.values["net.inet.ip.ttl"]
    snmp, _netstat, snmp6 = _darwin.DarwinSystem().protocol_tables()
    assert snmp6 is None and snmp is not None and "DefaultTTL" not in snmp["Ip"]


def test_tcp_counters_withheld_from_non_root(fake: FakeSysctl,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    fake.values["net.inet.tcp.stats"] = bytes(Tcpstat())  # what a non-root user reads
    host = _darwin.DarwinSystem()
    for _ in range(2):
        snmp, netstat, _ = host.protocol_tables()
        assert snmp is not None and netstat is not None
        assert "Tcp" not in snmp and "TcpDarwin" not in netstat and "Udp" in snmp
    said = warnings(caplog)
    assert len(said) == 1 and "net.inet.tcp.disable_access_to_stats" in said[0], said


def test_exposition(fake: FakeSysctl, caplog: pytest.LogCaptureFixture) -> None:
    """The darwin system through the collectors: sockets, listeners, protocols and routes of
    the structures above, as Prometheus reads them; the warning once over two scrapes."""
    caplog.set_level(logging.WARNING)
    s = scrape(protocols={"fields": ".*"})
    scrape()
    assert len([w for w in warnings(caplog) if "pcblist_n" in w]) == 1

    # Nothing failed.
    for c in ("sockets", "listeners", "protocols", "routes"):
        assert value(s, "netstat_exporter_collector_success", collector=c) == 1, c

    # sockets: every state counted per family (the skipped items not).
    def socks(proto: str, fam: str, state: str) -> Optional[float]:
        return value(s, "netstat_sockets", protocol=proto, family=fam, state=state)
    assert [socks("tcp", "ipv4", st) for st in (
        "listen", "established", "syn_sent", "syn_recv", "close_wait", "fin_wait1", "fin_wait2",
        "closing", "last_ack", "time_wait", "close")] == [2, 2, 1, 1, 1, 1, 1, 1, 1, 0, 1]
    assert [socks("tcp", "ipv6", st) for st in ("listen", "established", "time_wait")] == [1, 2, 1]
    assert [socks("udp", f, st) for f in ("ipv4", "ipv6") for st in ("unconnected", "established")] \
        == [1, 1, 1, 1]

    # listeners: counted, with their owner's user, none attributed to a program.
    rows = sorted((lab["protocol"], lab["family"], lab["address"], lab["port"], lab["process"],
                   lab["user"]) for _n, lab, _v in select(s, "netstat_listener_info"))
    assert rows == sorted([
        ("tcp", "ipv4", "0.0.0.0", "22", "", user(0)),
        ("tcp", "ipv6", "::", "80", "", user(501)),
        ("tcp", "ipv4", "127.0.0.1", "8080", "", user(501)),
        ("udp", "ipv4", "0.0.0.0", "53", "", user(0)),
        ("udp", "ipv6", "::", "5353", "", user(65)),
    ])
    assert value(s, "netstat_listener_unattributed", protocol="tcp") == 3
    assert value(s, "netstat_listener_unattributed", protocol="udp") == 2
    assert value(s, "netstat_listener_sockets", protocol="tcp", family="ipv4") == 2
    # Connections per listening port: 22 has six, in five states (both families).
    assert value(s, "netstat_listener_connections", port="22", state="established") == 2
    assert value(s, "netstat_listener_connections", port="22", state="close_wait") == 1
    assert value(s, "netstat_listener_connections", port="8080", state="established") == 1

    # protocols: Linux's names, and xnu's own under tcp_darwin.
    assert value(s, "netstat_tcp_active_opens_total") == 11508
    assert value(s, "netstat_tcp_out_segs_total") == 120040
    assert value(s, "netstat_tcp_retrans_segs_total") == 24
    assert value(s, "netstat_tcp_darwin_listendrop_total") == 41
    assert value(s, "netstat_tcp_darwin_conndrops_total") == 623
    assert value(s, "netstat_udp_in_datagrams_total") == 9000 - 1 - 3 - 2 - 40 - 50 - 6
    assert value(s, "netstat_udp_no_ports_total") == 33
    assert value(s, "netstat_ip_forwarding") == 2 and value(s, "netstat_ip_default_ttl") == 64
    assert value(s, "netstat_ip_in_receives_total") == 5000
    assert value(s, "netstat_ip6_in_receives_total") == 777
    for name in ("netstat_tcp_attempt_fails_total", "netstat_tcp_estab_resets_total",
                 "netstat_tcp_out_rsts_total", "netstat_tcp_curr_estab", "netstat_udp6_in_datagrams_total"):
        assert value(s, name) is None, f"{name}: no counterpart of the same meaning on macOS"
    tcp_darwin = {n for n, _l, _v in s if n.startswith("netstat_tcp_darwin_")}
    assert tcp_darwin == {TABLE[("TcpDarwin", f)].name for f in decode.TCP_DARWIN}

    # routes.
    assert value(s, "netstat_route_entries", family="ipv4", interface="en0") == 3
    assert value(s, "netstat_route_entries", family="ipv4", interface="lo0") == 2
    assert value(s, "netstat_route_entries", family="ipv4", interface="") == 1
    assert value(s, "netstat_route_entries", family="ipv6", interface="en0") == 3
    defaults = sorted((lab["family"], lab["gateway"], lab["interface"], lab["metric"])
                      for _n, lab, _v in select(s, "netstat_route_default_info"))
    assert defaults == [("ipv4", "192.168.1.1", "en0", "0"), ("ipv6", "fe80::1", "en0", "0")]
    listed = sorted(lab["destination"] for _n, lab, _v in select(s, "netstat_route_info"))
    assert listed == sorted({r.destination for r in EXPECTED_ROUTES})


def test_default_protocol_fields_on_macos(fake: FakeSysctl) -> None:
    s = scrape()
    got = {n for n, _l, _v in s if n.startswith("netstat_tcp_darwin_")}
    assert got == {"netstat_tcp_darwin_conndrops_total", "netstat_tcp_darwin_drops_total",
                   "netstat_tcp_darwin_listendrop_total", "netstat_tcp_darwin_rexmttimeo_total"}
    import re
    default = re.compile(DEFAULT_PROTOCOLS_FIELDS)
    assert all(default.match(f"TcpDarwin_{f}") for f in ("listendrop", "drops"))
    assert value(s, "netstat_tcp_active_opens_total") == 11508


def test_help_of_tcp_darwin_names_the_sysctl_and_field() -> None:
    f = TABLE[("TcpDarwin", "listendrop")]
    assert f.name == "netstat_tcp_darwin_listendrop_total" and f.kind == "counter"
    assert f.help.startswith("TcpDarwin listendrop in macOS sysctl net.inet.tcp.stats "
                             "(tcps_listendrop of struct tcpstat, netstat -s -p tcp): ")


# --- the calls -----------------------------------------------------------------------------------

def test_modules_import_without_loading_libc() -> None:
    code = ("import exporter.system._darwin, exporter.darwin.sysctl as s, sys; "
            "sys.exit(0 if s._libc is None else 1)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": ROOT})
    assert r.returncode == 0, r.stderr


class FakeLibc:
    """libc's two sysctl entry points over a table that grows by ``grow`` bytes after every
    size query, as a busy socket table does; errno through ctypes.set_errno."""

    def __init__(self, data: bytes, grow: int = 0, fail: int = 0) -> None:
        self.data, self.grow, self.fail = data, grow, fail
        self.calls: List[Tuple[Any, ...]] = []

    def _answer(self, buf: Any, sizep: Any) -> int:
        size = sizep._obj
        if buf is None:
            size.value = len(self.data)
            self.data += b"x" * self.grow
            return 0
        if self.fail:
            ctypes.set_errno(self.fail)
            return -1
        if size.value < len(self.data):
            ctypes.memmove(buf, self.data, size.value)
            ctypes.set_errno(errno.ENOMEM)
            return -1
        ctypes.memmove(buf, self.data, len(self.data))
        size.value = len(self.data)
        return 0

    def sysctlbyname(self, name: bytes, buf: Any, sizep: Any, new: Any, newlen: int) -> int:
        self.calls.append(("sysctlbyname", name, newlen))
        return self._answer(buf, sizep)

    def sysctl(self, mib: Any, n: int, buf: Any, sizep: Any, new: Any, newlen: int) -> int:
        self.calls.append(("sysctl", tuple(mib[:n]), n))
        return self._answer(buf, sizep)


def test_sysctl_reads_size_then_buffer(monkeypatch: pytest.MonkeyPatch) -> None:
    lib = FakeLibc(tcpstat_bytes())
    monkeypatch.setattr(darwin_sysctl, "_libc", lib)
    assert darwin_sysctl.by_name("net.inet.tcp.stats") == tcpstat_bytes()
    assert lib.calls == [("sysctlbyname", b"net.inet.tcp.stats", 0)] * 2
    lib = FakeLibc(b"".join(ROUTE_MSGS))
    monkeypatch.setattr(darwin_sysctl, "_libc", lib)
    assert darwin_sysctl.route_dump() == b"".join(ROUTE_MSGS)
    assert lib.calls[0] == ("sysctl", (4, 17, 0, 0, 1, 0), 6)


def test_sysctl_reads_a_growing_table_again(monkeypatch: pytest.MonkeyPatch) -> None:
    # A table that grows by less than the half again allocated for it: one read.
    lib = FakeLibc(b"a" * 100, grow=40)
    monkeypatch.setattr(darwin_sysctl, "_libc", lib)
    assert darwin_sysctl.by_name("net.inet.tcp.pcblist_n", table=True) == b"a" * 100 + b"x" * 40
    # Without slack, every growth is an ENOMEM: read again, at most TRIES times.
    lib = FakeLibc(b"a" * 100, grow=8)
    monkeypatch.setattr(darwin_sysctl, "_libc", lib)
    with pytest.raises(darwin_sysctl.SysctlError, match="still growing after 8 reads") as e:
        darwin_sysctl.by_name("net.inet.udp.stats")
    assert e.value.errno == errno.ENOMEM and len(lib.calls) == 2 * darwin_sysctl.TRIES


def test_sysctl_error_names_the_sysctl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(darwin_sysctl, "_libc", FakeLibc(b"1234", fail=errno.EPERM))
    with pytest.raises(darwin_sysctl.SysctlError, match="sysctl net.inet.ip.ttl: ") as e:
        darwin_sysctl.by_name("net.inet.ip.ttl")
    assert e.value.errno == errno.EPERM


def test_route_destination_is_a_network() -> None:
    for r in EXPECTED_ROUTES:
        assert str(ipaddress.ip_network(r.destination)) == r.destination
