# ruff: noqa: E501  (the table is one field per line; its descriptions are prose)
"""The table behind the ``protocols`` collector: every protocol counter a current kernel prints
in /proc/net/snmp, /proc/net/netstat and /proc/net/snmp6, with its metric type and meaning.

Field lists follow net/ipv4/proc.c (snmp4_ipstats_list, snmp4_tcp_list, snmp4_udp_list,
icmp_put, snmp4_net_list, snmp4_ipextstats_list), net/mptcp/mib.c (mptcp_snmp_list),
net/ipv6/proc.c (snmp6_ipstats_list, snmp6_icmp6_list, icmp6type2name, snmp6_udp*_list) and
the enums of include/uapi/linux/snmp.h, as of Linux 6.18. Meanings are from RFC 4293 (IP, ICMP),
RFC 4022 (TCP), RFC 4113 (UDP) and Documentation/networking/snmp_counter.rst.

A field is a counter unless listed with ``g`` (a level that can go down). A field missing here
(a newer kernel) is still exported when ``--collector.protocols.fields`` selects it, typed as a
counter and named by the same rule.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, List, Tuple

# Which file prints which group.
FILES: Dict[str, str] = {
    "Ip": "snmp", "Icmp": "snmp", "IcmpMsg": "snmp", "Tcp": "snmp", "Udp": "snmp",
    "UdpLite": "snmp", "TcpExt": "netstat", "IpExt": "netstat", "MPTcpExt": "netstat",
    "Ip6": "snmp6", "Icmp6": "snmp6", "Udp6": "snmp6", "UdpLite6": "snmp6",
}
# Groups of another system's own counters, which Linux has no name for, by where they come
# from ("{field}" is the field): exported only on that system, selected like any other with
# --collector.protocols.fields (TcpDarwin_listendrop). On macOS the Linux-named groups hold
# xnu's counters of the same meaning (exporter.darwin.decode).
NATIVE: Dict[str, str] = {
    "TcpDarwin": "macOS sysctl net.inet.tcp.stats (tcps_{field} of struct tcpstat, "
                 "netstat -s -p tcp)",
}

_UDP = """
InDatagrams c Datagrams delivered to sockets.
NoPorts c Datagrams received for a port with no socket (answered with ICMP port unreachable).
InErrors c Datagrams received that could not be delivered for other reasons than NoPorts (full receive buffer, bad checksum, memory).
OutDatagrams c Datagrams sent.
RcvbufErrors c Datagrams dropped because the socket receive buffer was full (SO_RCVBUF, net.core.rmem_*).
SndbufErrors c Datagrams dropped because the socket send buffer was full or the device queue refused them.
InCsumErrors c Datagrams received with a bad checksum.
IgnoredMulti c Broadcast or multicast datagrams ignored because no socket wanted them.
MemErrors c Datagrams dropped because the protocol memory limit (net.ipv4.udp_mem) was reached.
"""

# One block per group: "Field type description" per line; type is c (counter) or g (gauge).
_TEXT: Dict[str, str] = {
    "Ip": """
Forwarding g 1 if this host forwards IPv4 datagrams (net.ipv4.ip_forward=1), 2 if it does not (RFC 4293 ipForwarding).
DefaultTTL g TTL put in the header of datagrams sent from here (net.ipv4.ip_default_ttl).
InReceives c Datagrams received from all interfaces, including those in error.
InHdrErrors c Datagrams discarded for header errors: bad checksum, version, format, TTL exceeded, option errors.
InAddrErrors c Datagrams discarded because the destination address was not valid for this host.
ForwDatagrams c Datagrams forwarded to another host.
InUnknownProtos c Datagrams for this host discarded because no handler was registered for their protocol.
InDiscards c Input datagrams discarded with no problem found in them, e.g. for lack of buffer space.
InDelivers c Datagrams delivered to user protocols, ICMP included.
OutRequests c Datagrams that local protocols handed to IP for sending (forwarded ones not included).
OutDiscards c Output datagrams discarded with no problem found in them, e.g. for lack of buffer space.
OutNoRoutes c Datagrams discarded because no route to their destination was found.
ReasmTimeout c Fragments dropped because reassembly timed out (net.ipv4.ipfrag_time).
ReasmReqds c Fragments received that needed reassembly.
ReasmOKs c Datagrams reassembled.
ReasmFails c Reassembly failures (timeouts, errors; counts failures, not fragments).
FragOKs c Datagrams fragmented for sending.
FragFails c Datagrams that needed fragmenting but could not be (Don't Fragment set).
FragCreates c Fragments created.
OutTransmits c Datagrams passed to the device layer, forwarded ones included (Linux 6.3+).
""",
    "Icmp": """
InMsgs c ICMP messages received, those in error included.
InErrors c ICMP messages received with ICMP-specific errors (bad checksum, bad length).
InCsumErrors c ICMP messages received with a bad checksum.
InDestUnreachs c Destination Unreachable messages received.
InTimeExcds c Time Exceeded messages received.
InParmProbs c Parameter Problem messages received.
InSrcQuenchs c Source Quench messages received.
InRedirects c Redirect messages received.
InEchos c Echo (ping) requests received.
InEchoReps c Echo replies received.
InTimestamps c Timestamp requests received.
InTimestampReps c Timestamp replies received.
InAddrMasks c Address Mask requests received.
InAddrMaskReps c Address Mask replies received.
OutMsgs c ICMP messages sent, those in error included.
OutErrors c ICMP messages not sent because of problems within ICMP.
OutRateLimitGlobal c ICMP messages not sent because of the host-wide rate limit (net.ipv4.icmp_msgs_per_sec).
OutRateLimitHost c ICMP messages not sent because of the per-destination rate limit (net.ipv4.icmp_ratelimit).
OutDestUnreachs c Destination Unreachable messages sent.
OutTimeExcds c Time Exceeded messages sent.
OutParmProbs c Parameter Problem messages sent.
OutSrcQuenchs c Source Quench messages sent.
OutRedirects c Redirect messages sent.
OutEchos c Echo (ping) requests sent.
OutEchoReps c Echo replies sent.
OutTimestamps c Timestamp requests sent.
OutTimestampReps c Timestamp replies sent.
OutAddrMasks c Address Mask requests sent.
OutAddrMaskReps c Address Mask replies sent.
""",
    "Tcp": """
RtoAlgorithm g Retransmission timeout algorithm (1 other; Linux always reports 1).
RtoMin g Minimum retransmission timeout (TCP_RTO_MIN); the kernel prints milliseconds, exported in seconds.
RtoMax g Maximum retransmission timeout (TCP_RTO_MAX); the kernel prints milliseconds, exported in seconds.
MaxConn g Limit on TCP connections; -1 means dynamic (no fixed limit).
ActiveOpens c Connections opened actively: transitions CLOSED -> SYN_SENT (connect()).
PassiveOpens c Connections opened passively: transitions LISTEN -> SYN_RECV.
AttemptFails c Failed connection attempts: SYN_SENT or SYN_RECV -> CLOSED, plus SYN_RECV -> LISTEN.
EstabResets c Resets of established connections: ESTABLISHED or CLOSE_WAIT -> CLOSED.
CurrEstab g Connections now in ESTABLISHED or CLOSE_WAIT.
InSegs c Segments received, those in error included.
OutSegs c Segments sent, retransmissions excluded.
RetransSegs c Segments retransmitted.
InErrs c Segments received in error (bad checksum, malformed).
OutRsts c Segments sent with the RST flag.
InCsumErrors c Segments received with a bad checksum.
""",
    "Udp": _UDP,
    "UdpLite": _UDP,
    "TcpExt": """
SyncookiesSent c SYN cookies sent: the SYN queue was full (net.ipv4.tcp_max_syn_backlog) and net.ipv4.tcp_syncookies answered with a cookie.
SyncookiesRecv c ACKs carrying a valid SYN cookie received.
SyncookiesFailed c ACKs carrying an invalid SYN cookie received.
EmbryonicRsts c Resets received for connections in SYN_RECV.
PruneCalled c Times a socket's receive queue was pruned because it ran over its memory budget.
RcvPruned c Times received data was dropped after pruning could not free enough memory.
OfoPruned c Times the out-of-order queue was dropped to free memory.
OutOfWindowIcmps c ICMP messages dropped because they referred to data outside the window.
LockDroppedIcmps c ICMP messages dropped because the socket was busy (locked by the user).
ArpFilter c Packets dropped by ARP filtering (net.ipv4.conf.*.arp_filter).
TW c Connections that entered TIME_WAIT with the normal 60 s timer (TCP_TIMEWAIT_LEN; net.ipv4.tcp_fin_timeout does not change it), counted when the timer is armed (__inet_twsk_schedule, net/ipv4/inet_timewait_sock.c), not when the socket leaves: increase() counts every connection through TIME_WAIT, also bursts that come and go between two scrapes, which the TIME_WAIT gauge never sees.
TWRecycled c TIME_WAIT sockets reused for a new outgoing connection (net.ipv4.tcp_tw_reuse).
TWKilled c Timewait sockets whose timer was armed for 4 s or less (__inet_twsk_schedule, net/ipv4/inet_timewait_sock.c), counted on entry in place of TW: FIN_WAIT2 timewait sockets with a short net.ipv4.tcp_fin_timeout. Sockets killed later (an RST in TIME_WAIT, ss -K) are not counted.
PAWSActive c SYN-ACKs dropped by the PAWS timestamp check.
PAWSEstab c Segments of established connections dropped by the PAWS timestamp check.
BeyondWindow c Segments dropped because they were outside the receive window.
TSEcrRejected c Segments dropped because their echoed timestamp was invalid.
PAWSOldAck c ACKs dropped by the PAWS check for being too old.
PAWSTimewait c Segments to TIME_WAIT sockets dropped by the PAWS check.
DelayedACKs c Delayed ACKs sent (the delayed-ACK timer fired).
DelayedACKLocked c Delayed ACKs postponed because the socket was locked by the user.
DelayedACKLost c Duplicate data received whose ACK was presumably lost (a quick ACK was sent).
ListenOverflows c Times a completed connection could not enter a listener's accept queue because it was full (listen() backlog, net.core.somaxconn): the application accepts too slowly.
ListenDrops c Connection requests dropped by listeners for any reason, ListenOverflows included.
TCPHPHits c Data segments handled by the header-prediction fast path.
TCPPureAcks c Pure ACKs received (no data) on the slow path.
TCPHPAcks c Pure ACKs handled by the header-prediction fast path.
TCPRenoRecovery c Times Reno fast recovery was entered (no SACK).
TCPSackRecovery c Times SACK-based recovery was entered.
TCPSACKReneging c Times the peer reneged on (discarded) data it had SACKed.
TCPSACKReorder c Reordering detected using SACK.
TCPRenoReorder c Reordering detected using duplicate ACKs (no SACK).
TCPTSReorder c Reordering detected using timestamps.
TCPFullUndo c Congestion window reductions fully undone (the retransmission was spurious).
TCPPartialUndo c Congestion window reductions partially undone.
TCPDSACKUndo c Congestion window reductions undone thanks to D-SACK.
TCPLossUndo c Loss recoveries undone (the loss was spurious).
TCPLostRetransmit c Retransmissions that were themselves lost.
TCPRenoFailures c Timeouts in Reno fast recovery.
TCPSackFailures c Timeouts in SACK recovery.
TCPLossFailures c Timeouts in loss state.
TCPFastRetrans c Fast retransmissions.
TCPSlowStartRetrans c Retransmissions in slow start.
TCPTimeouts c Retransmission timer expirations (RTO) outside recovery.
TCPLossProbes c Tail loss probes sent.
TCPLossProbeRecovery c Losses recovered by a tail loss probe.
TCPRenoRecoveryFail c Reno recoveries that failed (timed out).
TCPSackRecoveryFail c SACK recoveries that failed (timed out).
TCPRcvCollapsed c Packets collapsed in the receive queue to save memory.
TCPBacklogCoalesce c Segments coalesced in the socket backlog.
TCPDSACKOldSent c D-SACKs sent for old duplicate data.
TCPDSACKOfoSent c D-SACKs sent for out-of-order duplicate data.
TCPDSACKRecv c D-SACKs received.
TCPDSACKOfoRecv c D-SACKs received for out-of-order data.
TCPAbortOnData c Connections reset because data arrived after the application closed the socket (or unread data was pending at close()).
TCPAbortOnClose c Connections reset because the application closed the socket with unread data.
TCPAbortOnMemory c Connections reset because TCP ran out of memory (net.ipv4.tcp_mem) or orphans (net.ipv4.tcp_max_orphans).
TCPAbortOnTimeout c Connections reset because a timer (retransmission, keepalive, window probe) gave up.
TCPAbortOnLinger c Connections reset in FIN_WAIT2 because of SO_LINGER or net.ipv4.tcp_fin_timeout.
TCPAbortFailed c Resets that could not be sent (no memory).
TCPMemoryPressures c Times TCP entered memory pressure (net.ipv4.tcp_mem pressure threshold).
TCPMemoryPressuresChrono c Milliseconds spent under TCP memory pressure.
TCPSACKDiscard c SACK blocks discarded as invalid.
TCPDSACKIgnoredOld c D-SACK blocks ignored as old.
TCPDSACKIgnoredNoUndo c D-SACK blocks ignored because nothing was to be undone.
TCPSpuriousRTOs c Retransmission timeouts found spurious by F-RTO.
TCPMD5NotFound c Segments dropped because a TCP-MD5 signature was expected but absent.
TCPMD5Unexpected c Segments dropped because they carried an unexpected TCP-MD5 signature.
TCPMD5Failure c Segments dropped because their TCP-MD5 signature was wrong.
TCPSackShifted c SACKed segments shifted (merged into the previous one).
TCPSackMerged c SACKed segments merged.
TCPSackShiftFallback c SACK shifts that fell back to the slow path.
TCPBacklogDrop c Segments dropped because the socket backlog was full while the socket was locked by the user.
PFMemallocDrop c Segments dropped because they used emergency (pfmemalloc) memory.
TCPMinTTLDrop c Segments dropped for a TTL below IP_MINTTL.
TCPDeferAcceptDrop c Bare ACKs dropped by TCP_DEFER_ACCEPT listeners.
IPReversePathFilter c Packets dropped by reverse-path filtering (net.ipv4.conf.*.rp_filter).
TCPTimeWaitOverflow c TIME_WAIT sockets not created because net.ipv4.tcp_max_tw_buckets was reached (the connection closed without TIME_WAIT).
TCPReqQFullDoCookies c SYN cookies sent because the SYN queue was full.
TCPReqQFullDrop c SYNs dropped because the SYN queue was full and SYN cookies were off.
TCPRetransFail c Retransmissions that failed to be sent (e.g. device queue full).
TCPRcvCoalesce c Segments coalesced in the receive queue.
TCPOFOQueue c Segments put in the out-of-order queue.
TCPOFODrop c Out-of-order segments dropped (no memory).
TCPOFOMerge c Out-of-order segments merged with queued ones.
TCPChallengeACK c Challenge ACKs sent (RFC 5961).
TCPSYNChallenge c Challenge ACKs sent in answer to a SYN on an established connection.
TCPFastOpenActive c Outgoing TCP Fast Open connections that sent data in the SYN.
TCPFastOpenActiveFail c Outgoing TCP Fast Open attempts that failed (SYN data not acknowledged).
TCPFastOpenPassive c Incoming TCP Fast Open connections accepted with data in the SYN.
TCPFastOpenPassiveFail c Incoming TCP Fast Open attempts that failed (bad cookie).
TCPFastOpenListenOverflow c Incoming TCP Fast Open requests refused because the pending-TFO limit was reached.
TCPFastOpenCookieReqd c TCP Fast Open cookies requested by clients.
TCPFastOpenBlackhole c Times active TCP Fast Open was disabled after a suspected middlebox blackhole.
TCPSpuriousRtxHostQueues c Retransmissions skipped because the original was still in a host queue.
BusyPollRxPackets c Packets received by busy polling.
TCPAutoCorking c Sends delayed by TCP autocorking (net.ipv4.tcp_autocorking).
TCPFromZeroWindowAdv c Times the advertised receive window opened from zero.
TCPToZeroWindowAdv c Times the advertised receive window closed to zero.
TCPWantZeroWindowAdv c Times a zero window would have been advertised.
TCPSynRetrans c SYN and SYN-ACK retransmissions.
TCPOrigDataSent c Segments with new data sent (retransmissions excluded).
TCPHystartTrainDetect c Times HyStart ACK-train detection ended slow start.
TCPHystartTrainCwnd c Congestion window when HyStart ACK-train detection ended slow start, summed.
TCPHystartDelayDetect c Times HyStart delay detection ended slow start.
TCPHystartDelayCwnd c Congestion window when HyStart delay detection ended slow start, summed.
TCPACKSkippedSynRecv c ACKs not sent in SYN_RECV because of rate limiting.
TCPACKSkippedPAWS c ACKs not sent after a PAWS drop because of rate limiting.
TCPACKSkippedSeq c ACKs not sent for out-of-window segments because of rate limiting.
TCPACKSkippedFinWait2 c ACKs not sent in FIN_WAIT2 because of rate limiting.
TCPACKSkippedTimeWait c ACKs not sent in TIME_WAIT because of rate limiting.
TCPACKSkippedChallenge c Challenge ACKs not sent because of rate limiting.
TCPWinProbe c Zero-window probes sent.
TCPKeepAlive c Keepalive probes sent.
TCPMTUPFail c Path MTU probes that failed.
TCPMTUPSuccess c Path MTU probes that succeeded.
TCPDelivered c Segments delivered to the peer (acknowledged), retransmissions included.
TCPDeliveredCE c Segments delivered to the peer with an ECN CE mark.
TCPAckCompressed c ACKs compressed (coalesced) before sending.
TCPZeroWindowDrop c Segments dropped because the receive window was zero.
TCPRcvQDrop c Segments dropped because the socket receive buffer was full.
TCPWqueueTooBig c Sends refused because the write queue was too big.
TCPFastOpenPassiveAltKey c Incoming TCP Fast Open connections accepted with the alternate key.
TcpTimeoutRehash c Flow label rehashes after retransmission timeouts.
TcpDuplicateDataRehash c Flow label rehashes after duplicate data.
TCPDSACKRecvSegs c Segments covered by received D-SACKs.
TCPDSACKIgnoredDubious c D-SACK blocks ignored as dubious.
TCPMigrateReqSuccess c Connection requests migrated to another listener (SO_REUSEPORT).
TCPMigrateReqFailure c Connection requests that could not be migrated to another listener.
TCPPLBRehash c Flow rehashes by Protective Load Balancing.
TCPAORequired c Segments dropped because TCP-AO was required but absent.
TCPAOBad c Segments dropped because their TCP-AO signature was wrong.
TCPAOKeyNotFound c Segments dropped because no TCP-AO key matched.
TCPAOGood c Segments with a valid TCP-AO signature.
TCPAODroppedIcmps c ICMP messages dropped on TCP-AO connections.
""",
    "IpExt": """
InNoRoutes c Datagrams dropped because no route was found on input.
InTruncatedPkts c Datagrams dropped because they were shorter than their header says.
InMcastPkts c Multicast datagrams received.
OutMcastPkts c Multicast datagrams sent.
InBcastPkts c Broadcast datagrams received.
OutBcastPkts c Broadcast datagrams sent.
InOctets c Bytes received in IP datagrams, headers included.
OutOctets c Bytes sent in IP datagrams, headers included.
InMcastOctets c Bytes received in multicast datagrams.
OutMcastOctets c Bytes sent in multicast datagrams.
InBcastOctets c Bytes received in broadcast datagrams.
OutBcastOctets c Bytes sent in broadcast datagrams.
InCsumErrors c Datagrams received with a bad header checksum.
InNoECTPkts c Datagrams received without ECN capability.
InECT1Pkts c Datagrams received with ECT(1).
InECT0Pkts c Datagrams received with ECT(0).
InCEPkts c Datagrams received with Congestion Experienced.
ReasmOverlaps c Fragments dropped because they overlapped others.
""",
    "MPTcpExt": "\n".join(
        f"{f} c MPTCP MIB counter (net/mptcp/mib.c)."
        for f in (  # noqa: SIM905  (the kernel's order, kept greppable as one string)
            "MPCapableSYNRX MPCapableSYNTX MPCapableSYNACKRX MPCapableACKRX MPCapableFallbackACK "
            "MPCapableFallbackSYNACK MPCapableSYNTXDrop MPCapableSYNTXDisabled "
            "MPCapableEndpAttempt MPFallbackTokenInit MPTCPRetrans MPJoinNoTokenFound "
            "MPJoinSynRx MPJoinSynBackupRx MPJoinSynAckRx MPJoinSynAckBackupRx "
            "MPJoinSynAckHMacFailure MPJoinAckRx MPJoinAckHMacFailure MPJoinRejected "
            "MPJoinSynTx MPJoinSynTxCreatSkErr MPJoinSynTxBindErr MPJoinSynTxConnectErr "
            "DSSNotMatching DSSCorruptionFallback DSSCorruptionReset InfiniteMapTx "
            "InfiniteMapRx DSSNoMatchTCP DataCsumErr OFOQueueTail OFOQueue OFOMerge "
            "NoDSSInWindow DuplicateData AddAddr AddAddrTx AddAddrTxDrop EchoAdd EchoAddTx "
            "EchoAddTxDrop PortAdd AddAddrDrop MPJoinPortSynRx MPJoinPortSynAckRx "
            "MPJoinPortAckRx MismatchPortSynRx MismatchPortAckRx RmAddr RmAddrDrop RmAddrTx "
            "RmAddrTxDrop RmSubflow MPPrioTx MPPrioRx MPFailTx MPFailRx MPFastcloseTx "
            "MPFastcloseRx MPRstTx MPRstRx SubflowStale SubflowRecover SndWndShared "
            "RcvWndShared RcvWndConflictUpdate RcvWndConflict"
        ).split()
    ) + """
MPCurrEstab g MPTCP connections now established (MPTCP_MIB_CURRESTAB, net/mptcp/mib.c).
Blackhole c Times MPTCP was disabled after a suspected middlebox blackhole.
MPCapableDataFallback c MP_CAPABLE connections that fell back to TCP on data.
MD5SigFallback c MPTCP connections that fell back to TCP because of TCP-MD5.
DssFallback c MPTCP connections that fell back to TCP on a bad DSS.
SimultConnectFallback c MPTCP connections that fell back to TCP on a simultaneous connect.
FallbackFailed c Fallbacks to TCP that failed.
WinProbe c MPTCP zero-window probes sent.
""",
    "Ip6": """
InReceives c Datagrams received from all interfaces, including those in error.
InHdrErrors c Datagrams discarded for header errors (hop limit exceeded, format, version).
InTooBigErrors c Datagrams that could not be forwarded because they were larger than the link MTU.
InNoRoutes c Datagrams discarded because no route was found.
InAddrErrors c Datagrams discarded because the destination address was not valid for this host.
InUnknownProtos c Datagrams for this host discarded because of an unknown next header.
InTruncatedPkts c Datagrams dropped because they were shorter than their header says.
InDiscards c Input datagrams discarded with no problem found in them, e.g. for lack of buffer space.
InDelivers c Datagrams delivered to user protocols, ICMPv6 included.
OutForwDatagrams c Datagrams forwarded.
OutRequests c Datagrams that local protocols handed to IPv6 for sending.
OutDiscards c Output datagrams discarded with no problem found in them.
OutNoRoutes c Datagrams discarded because no route to their destination was found.
ReasmTimeout c Fragments dropped because reassembly timed out.
ReasmReqds c Fragments received that needed reassembly.
ReasmOKs c Datagrams reassembled.
ReasmFails c Reassembly failures.
FragOKs c Datagrams fragmented for sending.
FragFails c Datagrams that needed fragmenting but could not be.
FragCreates c Fragments created.
InMcastPkts c Multicast datagrams received.
OutMcastPkts c Multicast datagrams sent.
InOctets c Bytes received in IPv6 datagrams, headers included.
OutOctets c Bytes sent in IPv6 datagrams, headers included.
InMcastOctets c Bytes received in multicast datagrams.
OutMcastOctets c Bytes sent in multicast datagrams.
InBcastOctets c Bytes received in broadcast datagrams (always 0 for IPv6).
OutBcastOctets c Bytes sent in broadcast datagrams (always 0 for IPv6).
InNoECTPkts c Datagrams received without ECN capability.
InECT1Pkts c Datagrams received with ECT(1).
InECT0Pkts c Datagrams received with ECT(0).
InCEPkts c Datagrams received with Congestion Experienced.
OutTransmits c Datagrams passed to the device layer, forwarded ones included (Linux 6.3+).
""",
    "Icmp6": """
InMsgs c ICMPv6 messages received, those in error included.
InErrors c ICMPv6 messages received with ICMP-specific errors.
OutMsgs c ICMPv6 messages sent.
OutErrors c ICMPv6 messages not sent because of problems within ICMPv6.
InCsumErrors c ICMPv6 messages received with a bad checksum.
OutRateLimitHost c ICMPv6 messages not sent because of the per-destination rate limit (net.ipv6.icmp.ratelimit).
""" + "\n".join(
        f"{d}{t} c {t_desc} messages {'received' if d == 'In' else 'sent'}."
        for d in ("In", "Out")
        for t, t_desc in (
            ("DestUnreachs", "Destination Unreachable"), ("PktTooBigs", "Packet Too Big"),
            ("TimeExcds", "Time Exceeded"), ("ParmProblems", "Parameter Problem"),
            ("Echos", "Echo request"), ("EchoReplies", "Echo reply"),
            ("GroupMembQueries", "MLD query"), ("GroupMembResponses", "MLDv1 report"),
            ("GroupMembReductions", "MLDv1 done"), ("RouterSolicits", "Router Solicitation"),
            ("RouterAdvertisements", "Router Advertisement"),
            ("NeighborSolicits", "Neighbor Solicitation"),
            ("NeighborAdvertisements", "Neighbor Advertisement"), ("Redirects", "Redirect"),
            ("MLDv2Reports", "MLDv2 report"),
        )
    ),
    "Udp6": _UDP,
    "UdpLite6": _UDP,
    # xnu's struct tcpstat (bsd/netinet/tcp_var.h), the fields every macOS since 10.14 lays out
    # alike (exporter.darwin.decode.TCP_DARWIN), less those exported under a Linux name (Tcp
    # ActiveOpens is tcps_connattempt, PassiveOpens tcps_accepts, InSegs tcps_rcvtotal,
    # RetransSegs tcps_sndrexmitpack, InCsumErrors tcps_rcvbadsum). Counters are 32 bits wide.
    "TcpDarwin": """
connects c Connections established, actively or passively (SYN_SENT or SYN_RECEIVED -> ESTABLISHED).
drops c Connections dropped after a SYN was received: given up by a timer, reset by the peer in SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, CLOSE_WAIT or FIN_WAIT_2, or evicted unfinished from a full listen queue. The nearest BSD counter to Tcp EstabResets, which counts only ESTABLISHED and CLOSE_WAIT.
conndrops c Connections dropped before a SYN was received from the peer: connect() timed out or was refused (SYN_SENT -> CLOSED). The nearest BSD counter to Tcp AttemptFails, which also counts SYN_RECEIVED failures (in drops here).
closed c Connections closed, drops included.
segstimed c Segments sent whose round-trip time was timed.
rttupdated c Round-trip time samples taken.
delack c Delayed ACKs sent.
timeoutdrop c Connections dropped because retransmissions went unanswered (the retransmission timer gave up).
rexmttimeo c Retransmission timer expirations (RTO).
persisttimeo c Persist timer expirations (zero-window probing).
keeptimeo c Keepalive timer expirations (also the connection-establishment timer).
keepprobe c Keepalive probes sent.
keepdrops c Connections dropped by the keepalive timer: probes went unanswered, or the connection was not established in time.
sndtotal c Segments sent, retransmissions included (Tcp OutSegs is this less sndrexmitpack).
sndpack c Data segments sent.
sndbyte c Data bytes sent (32 bits: wraps at 4 GiB).
sndrexmitbyte c Data bytes retransmitted.
sndacks c ACK-only segments sent.
sndprobe c Window probes sent.
sndurg c Segments sent with only urgent data (URG).
sndwinup c Window-update-only segments sent.
sndctrl c Control segments sent: SYN, FIN or RST.
rcvpack c Segments received in sequence.
rcvbyte c Bytes received in sequence (32 bits: wraps at 4 GiB).
rcvbadoff c Segments received with a bad data offset (part of Tcp InErrs).
rcvmemdrop c Out-of-order segments dropped because the reassembly queue was full or memory was short.
rcvshort c Segments received too short for a TCP header (part of Tcp InErrs).
rcvduppack c Segments received that held only duplicate data.
rcvdupbyte c Bytes received in segments that held only duplicate data.
rcvpartduppack c Segments received with some duplicate data.
rcvpartdupbyte c Duplicate bytes received in partly duplicate segments.
rcvoopack c Segments received out of order.
rcvoobyte c Bytes received out of order.
rcvpackafterwin c Segments received with data beyond the receive window.
rcvbyteafterwin c Bytes received beyond the receive window.
rcvafterclose c Segments received after the socket was closed.
rcvwinprobe c Window probes received.
rcvdupack c Duplicate ACKs received.
rcvacktoomuch c ACKs received for data not yet sent.
rcvackpack c ACK segments received.
rcvackbyte c Bytes acknowledged by received ACKs.
rcvwinupd c Window updates received.
pawsdrop c Segments dropped by the PAWS timestamp check.
predack c ACKs handled by the header-prediction fast path.
preddat c Data segments handled by the header-prediction fast path.
cachedrtt c Times a route's cached round-trip time was updated.
cachedrttvar c Times a route's cached round-trip time variance was updated.
cachedssthresh c Times a route's cached slow-start threshold was updated.
usedrtt c Connections whose round-trip time was initialised from the route.
usedrttvar c Connections whose round-trip time variance was initialised from the route.
usedssthresh c Connections whose slow-start threshold was initialised from the route.
persistdrop c Connections dropped because zero-window probing went on too long.
badsyn c Invalid SYNs received (a SYN with ACK to a listener, a SYN in the window of a connection).
mturesent c Segments resent because path-MTU discovery lowered the MSS.
listendrop c Times a connection request found a listener's queue full (listen() backlog, kern.ipc.somaxconn): the application accepts too slowly. The kernel then drops an unfinished connection to make room, or the request. BSD's counterpart of TcpExt ListenOverflows.
synchallenge c Challenge ACKs sent in answer to a SYN on a synchronized connection (RFC 5961).
rstchallenge c Challenge ACKs sent in answer to an RST in the window but not at its start (RFC 5961).
sndrexmitbad c Retransmissions found unnecessary afterwards (spurious retransmission timeouts).
badrst c RSTs received in the window but not at its start, not acted upon (RFC 5961).
sack_recovery_episode c SACK loss recovery episodes.
sack_rexmits c Segments retransmitted in SACK recovery.
sack_rexmit_bytes c Bytes retransmitted in SACK recovery.
sack_rcv_blocks c SACK blocks received.
sack_send_blocks c SACK blocks sent.
sack_sboverflow c Times the SACK scoreboard overflowed.
""",
}

# IcmpMsg (and the numbered Icmp6 per-type counters) list only types seen so far, so they are
# matched by pattern rather than listed: icmpmsg_put() in net/ipv4/proc.c prints
# "InType%u"/"OutType%u"; snmp6_seq_show_icmpv6() in net/ipv6/proc.c prints the same.
TYPE_FIELD = re.compile(r"^(In|Out)Type(\d+)$")

# Fields the kernel prints in milliseconds (jiffies_to_msecs in snmp_seq_show_tcp_udp,
# net/ipv4/proc.c), exported in seconds with a ``_seconds`` name.
MILLISECONDS = frozenset({"Tcp_RtoMin", "Tcp_RtoMax"})


@dataclass(frozen=True)
class Field:
    group: str
    field: str
    kind: str  # "counter" or "gauge"
    description: str

    @property
    def key(self) -> str:
        """What ``--collector.protocols.fields`` matches: ``TcpExt_ListenOverflows``."""
        return f"{self.group}_{self.field}"

    @property
    def file(self) -> str:
        native = NATIVE.get(self.group)
        if native is not None:
            return native.format(field=self.field)
        return "/proc/net/" + FILES.get(self.group, "netstat")

    @property
    def name(self) -> str:
        base = f"netstat_{snake(self.group)}_{snake(self.field)}"
        if self.key in MILLISECONDS:
            base += "_seconds"
        return base + "_total" if self.kind == "counter" else base

    @property
    def scale(self) -> float:
        """What the kernel's number is multiplied by to give the metric's base unit."""
        return 0.001 if self.key in MILLISECONDS else 1.0

    @property
    def help(self) -> str:
        return f"{self.group} {self.field} in {self.file}: {self.description}"


_LOWER_UPPER = re.compile(r"([a-z0-9])([A-Z])")
_UPPER_UPPERLOWER = re.compile(r"([A-Z])([A-Z][a-z])")

# Abbreviations the kernel writes in capitals and runs together ("TCPDSACKUndo",
# "MPCapableSYNACKRX"), each kept as one word. Without them the case boundaries cannot tell where
# one ends and the next begins (``tcpdsack_undo``), and the same kernel word would be spelt two
# ways (``TCPSACKReneging`` beside ``TCPSackShifted``). "MLDv2" and "HMac" would split inside
# the word (``ml_dv2``; ``h_mac``, whose lone "h" `promtool check metrics` reads as hours).
# Longest first, so that one alternative never swallows the start of a longer one.
_WORDS = sorted(["MPTCP", "MPTcp", "MLDv2", "HMac", "DSACK", "SACK", "TCP", "ACK", "SYN", "AO",
                 "MD5", "MTUP", "OFO", "PLB", "TS", "HP", "RX", "TX"], key=len, reverse=True)
_WORD = re.compile("|".join(_WORDS))
# An all-capitals word made plural with a lower-case "s" ("DelayedACKs", "FragOKs",
# "TCPSpuriousRTOs") is one word, not "...AC" and "Ks".
_PLURAL = re.compile(r"([A-Z]{2,})s(?=[A-Z0-9]|$)")
# Base units (https://prometheus.io/docs/practices/naming/#base-units): the IP MIB's octets are
# bytes.
_UNITS = {"octets": "bytes"}


def _word(m: re.Match[str]) -> str:
    return m.group(0)[0] + m.group(0)[1:].lower()


def snake(name: str) -> str:
    """The naming rule of the metric contract: the field as an SRE would type it.

    Abbreviations in capitals (``_WORDS``, and any capital run made plural with ``s``) count as
    one word; then the name is split at lower/digit->Upper and at Upper->UpperLower boundaries,
    lower-cased and joined with "_"; octets are bytes. ``ListenOverflows`` ->
    ``listen_overflows``, ``TCPTimeWaitOverflow`` -> ``tcp_time_wait_overflow``, ``DelayedACKs``
    -> ``delayed_acks``, ``TCPDSACKUndo`` -> ``tcp_dsack_undo``, ``InMLDv2Reports`` ->
    ``in_mldv2_reports``, ``MPTcpExt`` -> ``mptcp_ext``, ``InOctets`` -> ``in_bytes``.
    """
    name = _PLURAL.sub(_word, _WORD.sub(_word, name))
    words = _LOWER_UPPER.sub(r"\1_\2", _UPPER_UPPERLOWER.sub(r"\1_\2", name)).lower().split("_")
    return "_".join(_UNITS.get(w, w) for w in words)


def _parse() -> Dict[Tuple[str, str], Field]:
    out: Dict[Tuple[str, str], Field] = {}
    for group, text in _TEXT.items():
        for line in text.strip().splitlines():
            name, kind, desc = line.split(" ", 2)
            if kind not in ("c", "g"):
                raise ValueError(f"{group} {name}: kind must be c or g")
            out[(group, name)] = Field(group, name, "counter" if kind == "c" else "gauge", desc)
    return out


TABLE: Dict[Tuple[str, str], Field] = _parse()


def lookup(group: str, field: str) -> Field:
    """The table's entry for a kernel field, or a counter named by the same rule for one the
    table does not know (a newer kernel)."""
    f = TABLE.get((group, field))
    if f is not None:
        return f
    m = TYPE_FIELD.match(field)
    if m and group in ("IcmpMsg", "Icmp6"):
        what = "ICMPv6" if group == "Icmp6" else "ICMP"
        way = "received" if m.group(1) == "In" else "sent"
        return Field(group, field, "counter", f"{what} messages of type {m.group(2)} {way}.")
    return Field(group, field, "counter",
                 "a field this exporter's table does not describe (newer kernel); exported as a "
                 "counter.")


def pattern_rows() -> List[Field]:
    """Documentation rows for the per-ICMP-type counters, which the kernel names by number."""
    return [Field(g, f"{d}Type<N>", "counter",
                  f"{'ICMPv6' if g == 'Icmp6' else 'ICMP'} messages of type N "
                  f"{'received' if d == 'In' else 'sent'}; present once a message of that "
                  "type was seen.")
            for g in ("IcmpMsg", "Icmp6") for d in ("In", "Out")]
