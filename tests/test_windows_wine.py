"""Windows: the IP Helper calls made for real, under Wine, and decoded by exporter.windows.decode.

tests/wine/probe.c makes the calls exporter/windows/iphlpapi.py makes (GetTcpStatisticsEx2
through GetProcAddress where the DLL has it, else GetTcpStatisticsEx; the same for UDP;
GetIpStatisticsEx, GetIcmpStatisticsEx, GetIpForwardTable2, GetIfTable2, GetExtendedTcpTable,
GetExtendedUdpTable) and writes each structure raw to a file. Wine's iphlpapi fills them from
this host's own tables (/proc/net/snmp, /proc/net/dev, the routing table, the socket tables),
so what the decoders make of the bytes is held against those tables read just before and just
after the probe: a counter between the two readings, a setting equal to both.

The probe is compiled with mingw-w64 at test time; one Wine prefix serves the session (about
5 s to create, then about a tenth of a second per probe run). scripts/test-all installs wine64 and
gcc-mingw-w64-x86-64.

What Wine does not do as Windows does, and the tests allow for (each said where it is):
Wine 8 has no GetTcpStatisticsEx2/GetUdpStatisticsEx2, so the probe takes the 32-bit fallback;
it answers both families' TCP statistics with Linux's Tcp group (which counts both), lists no
IPv6 route, and gives pid 0 for sockets no Wine process holds.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Set, Tuple

import pytest
from helpers import ROOT
from nshelpers import SS_STATE

from exporter.procfs import netdev, route, snmp, snmp6
from exporter.system import load_named
from exporter.vocabulary.names import TCP_STATES
from exporter.windows import decode, iphlpapi
from exporter.windows.decode import AF_INET, AF_INET6

MINGW = "x86_64-w64-mingw32-gcc"
WINE_DIR = os.path.join(ROOT, "tests", "wine")
STATE_NUMBERS = {name: num for num, name in TCP_STATES.items()}
STATE_NUMBERS["close"] = 7


def wine_binary() -> Optional[str]:
    """Debian's wine64 package installs /usr/lib/wine/wine64 (the `wine` package adds the
    /usr/bin wrapper); other systems have wine64 or wine on the PATH."""
    for cand in ("wine64", "/usr/lib/wine/wine64", "wine"):
        path = shutil.which(cand)
        if path:
            return path
    return None


def wineserver_binary(wine: str) -> Optional[str]:
    here = os.path.dirname(os.path.realpath(wine))
    for cand in (os.path.join(here, "wineserver64"), os.path.join(here, "wineserver"),
                 "wineserver"):
        path = shutil.which(cand)
        if path:
            return path
    return None


# serial: the probe's answers are held against the host's counters, interfaces and `ss`.
pytestmark = [pytest.mark.skipif(
    wine_binary() is None or shutil.which(MINGW) is None,
    reason=f"needs wine64 and {MINGW} (scripts/test-all installs them)"), pytest.mark.serial]


@dataclass
class Wine:
    wine: str
    server: Optional[str]
    env: Dict[str, str]
    probe: str
    work: str
    runs: int = 0
    seconds: List[float] = None  # type: ignore[assignment]

    def run(self, *args: str) -> Dict[str, bytes]:
        """One run of the probe: the files it wrote, by name."""
        out = os.path.join(self.work, f"run{self.runs}")
        self.runs += 1
        os.mkdir(out)
        start = time.monotonic()
        # Its output to a file, not a pipe: the Wine processes the run starts (services.exe,
        # winedevice.exe) inherit the descriptors and keep a pipe open until the wineserver
        # lets them go, which made each run take 3 s instead of a tenth of one.
        log = os.path.join(self.work, f"run{self.runs - 1}.log")
        with open(log, "w+b") as f:
            r = subprocess.run([self.wine, self.probe, ".", *args], cwd=out, env=self.env,
                               stdout=f, stderr=subprocess.STDOUT, timeout=120,
                               stdin=subprocess.DEVNULL)
            f.seek(0)
            output = f.read().decode(errors="replace")
        self.seconds.append(time.monotonic() - start)
        files = {}
        for name in os.listdir(out):
            with open(os.path.join(out, name), "rb") as f:
                files[name] = f.read()
        errors = {n: v for n, v in files.items() if n.endswith(".err")}
        assert r.returncode == 0 and not errors, (r.returncode, errors, output[-2000:])
        return files


@pytest.fixture(scope="session")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wine]:
    """The probe, compiled, and a Wine prefix of this session, made by a first run."""
    work = str(tmp_path_factory.mktemp("wine"))
    probe = os.path.join(work, "probe.exe")
    subprocess.run([MINGW, "-O1", "-Wall", "-Wextra", "-Werror", "-I", WINE_DIR, "-o", probe,
                    os.path.join(WINE_DIR, "probe.c"), "-liphlpapi"], check=True,
                   timeout=120, capture_output=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WINE", "DISPLAY"))}
    env.update(WINEPREFIX=os.path.join(work, "prefix"), WINEDEBUG="-all",
               # No prompt to install Mono or Gecko into the prefix.
               WINEDLLOVERRIDES="mscoree,mshtml=", WINEARCH="win64")
    wine_ = wine_binary()
    assert wine_ is not None
    w = Wine(wine_, wineserver_binary(wine_), env, probe, work, seconds=[])
    start = time.monotonic()
    try:
        w.run()  # creates the prefix
        created = time.monotonic() - start
        yield w
    finally:
        if w.server:  # this prefix's wineserver, and the Wine processes it keeps
            subprocess.run([w.server, "-k"], env=env, timeout=60, capture_output=True)
            subprocess.run([w.server, "-w"], env=env, timeout=60, capture_output=True)
        # A prefix is about 700 MB: not kept among pytest's last temporary directories.
        shutil.rmtree(env["WINEPREFIX"], ignore_errors=True)
    print(f"\nwine: prefix made in {created:.1f} s; {w.runs - 1} probe runs, "
          f"{sum(w.seconds[1:]):.1f} s")


Tables = Tuple[Dict[str, Dict[str, int]], Dict[str, Dict[str, int]]]


def proc_tables() -> Tables:
    s, s6 = snmp.read_snmp("/proc"), snmp6.read_snmp6("/proc")
    assert s is not None
    return s, s6 or {}


def bracketed(measure: Callable[[], Any], run: Callable[[], Dict[str, bytes]],
              check: Callable[[Any, Dict[str, bytes], Any], None], tries: int = 3) -> None:
    """``check(before, files, after)`` on a probe run between two readings of the host; tried
    again (a few times) when a level moved under it."""
    for attempt in range(tries):
        before = measure()
        files = run()
        after = measure()
        try:
            check(before, files, after)
            return
        except AssertionError:
            if attempt == tries - 1:
                raise


def between(what: str, b: int, v: int, a: int) -> None:
    assert b <= v <= a, f"{what}: {v} not within [{b}, {a}]"


# Fields that are settings: equal to the host's on both sides of the probe.
SETTINGS = {("Ip", "Forwarding"), ("Ip", "DefaultTTL"), ("Tcp", "RtoAlgorithm"),
            ("Tcp", "RtoMin"), ("Tcp", "RtoMax"), ("Tcp", "MaxConn")}
LEVELS = {("Tcp", "CurrEstab")}


def hold(group: str, decoded: Dict[str, int], before: Dict[str, int],
         after: Dict[str, int]) -> None:
    """Every decoded field against the host's, as a setting, a level or a counter; a numbered
    ICMP type the host has not printed is 0 there."""
    for field, v in decoded.items():
        numbered = "Type" in field and field[-1].isdigit()
        b = before.get(field, 0 if numbered else None)
        a = after.get(field, 0 if numbered else None)
        assert b is not None and a is not None, f"{group} {field}: not in the host's table"
        if (group, field) in SETTINGS:
            assert v == b == a, f"{group} {field}: {v}, host {b}/{a}"
        elif (group, field) in LEVELS:
            between(f"{group} {field}", min(b, a), v, max(b, a))
        else:
            between(f"{group} {field}", b, v, a)
    # The numbered ICMP types the host counts, the decoder counts too.
    for field in after:
        if "Type" in field and field[-1].isdigit() and before.get(field):
            assert field in decoded, f"{group} {field} of the host is not decoded"


def as_wine_reads(host: Dict[str, Dict[str, int]]) -> Dict[str, Dict[str, int]]:
    """/proc/net/snmp's Icmp and IcmpMsg groups as Wine 8 turns them into MIB_ICMP_EX.

    Wine reads the Icmp line by position, in the columns older kernels print: newer ones print
    OutRateLimitGlobal and OutRateLimitHost after OutErrors, so each Out<name> Wine fills holds
    the column two places before its own (measured: OutDestUnreachs 2 came back as type 12,
    ParmProbs). And Wine makes the per-type counts from those named columns alone, so a type
    Linux does not name in Icmp is 0 there."""
    icmp = dict(host["Icmp"])
    out_names = ["Out" + n for n in decode.ICMP_NAMES.values()]  # the kernel's column order
    unknown = [f for f in ("OutRateLimitGlobal", "OutRateLimitHost") if f in icmp]
    columns = [icmp[f] for f in unknown + out_names]
    icmp.update(zip(out_names, columns))
    msg = {f"{way}Type{t}": icmp[way + name] for t, name in decode.ICMP_NAMES.items()
           for way in ("In", "Out") if icmp[way + name]}
    return {**host, "Icmp": icmp, "IcmpMsg": msg}


def files_system(monkeypatch: pytest.MonkeyPatch, files: Dict[str, bytes]) -> Any:
    """The real WindowsSystem, its calls answered with the probe's files."""
    api = {"tcp": files["tcp.api"].decode(), "udp": files["udp.api"].decode()}
    fam = {AF_INET: "4", AF_INET6: "6"}
    monkeypatch.setattr(iphlpapi, "tcp_statistics",
                        lambda f: (api["tcp"], files[f"tcp{fam[f]}.bin"]))
    monkeypatch.setattr(iphlpapi, "udp_statistics",
                        lambda f: (api["udp"], files[f"udp{fam[f]}.bin"]))
    monkeypatch.setattr(iphlpapi, "ip_statistics", lambda f: files[f"ip{fam[f]}.bin"])
    monkeypatch.setattr(iphlpapi, "icmp_statistics", lambda f: files[f"icmp{fam[f]}.bin"])
    monkeypatch.setattr(iphlpapi, "if_table", lambda: files["if.bin"])
    monkeypatch.setattr(iphlpapi, "forward_table", lambda: files["route.bin"])
    return load_named("windows")


# --- netstat -s --------------------------------------------------------------------------------

def test_tcp_statistics_are_the_hosts(wine: Wine) -> None:
    def check(before: Tables, files: Dict[str, bytes], after: Tables) -> None:
        api = files["tcp.api"].decode()
        assert api in ("MIB_TCPSTATS2", "MIB_TCPSTATS")
        v4 = decode.tcp((api, files["tcp4.bin"]))
        v6 = decode.tcp((api, files["tcp6.bin"]))
        assert set(v4) <= set(before[0]["Tcp"]), "a decoded name Linux does not print"
        hold("Tcp", v4, before[0]["Tcp"], after[0]["Tcp"])
        # Wine answers AF_INET6 with Linux's Tcp group too (Linux counts both families in
        # it); Windows keeps one per family, which is why the system adds them up.
        hold("Tcp", v6, before[0]["Tcp"], after[0]["Tcp"])

    bracketed(proc_tables, wine.run, check)


def test_tcp_statistics_fallback_when_ex2_is_not_used(wine: Wine) -> None:
    """The probe told to skip GetTcpStatisticsEx2 calls GetTcpStatisticsEx: a MIB_TCPSTATS,
    decoded to the host's values as well. (Wine 8 exports no Ex2, so there every run takes the
    fallback; where a Wine has Ex2, the first test decodes its MIB_TCPSTATS2.)"""
    def check(before: Tables, files: Dict[str, bytes], after: Tables) -> None:
        assert files["tcp.api"] == b"MIB_TCPSTATS" and files["udp.api"] == b"MIB_UDPSTATS"
        assert len(files["tcp4.bin"]) == 60 and len(files["udp4.bin"]) == 20
        hold("Tcp", decode.tcp(("MIB_TCPSTATS", files["tcp4.bin"])), before[0]["Tcp"],
             after[0]["Tcp"])
        hold("Udp", decode.udp(("MIB_UDPSTATS", files["udp4.bin"])), before[0]["Udp"],
             after[0]["Udp"])

    bracketed(proc_tables, lambda: wine.run("ex"), check)


def test_protocol_tables_are_the_hosts(wine: Wine, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the WindowsSystem serves to the protocols collector, from the probe's structures:
    every group but Tcp (above) against /proc/net/snmp and /proc/net/snmp6."""
    def check(before: Tables, files: Dict[str, bytes], after: Tables) -> None:
        snmp_, netstat, snmp6_ = files_system(monkeypatch, files).protocol_tables()
        assert netstat is None
        assert set(snmp_) == {"Ip", "Icmp", "IcmpMsg", "Tcp", "Udp"}
        assert set(snmp6_) == {"Ip6", "Icmp6", "Udp6"}
        for group in ("Ip", "Udp"):
            hold(group, snmp_[group], before[0][group], after[0][group])
        # ICMP's per-type counters as Wine fills them (as_wine_reads), and against the host's
        # own IcmpMsg where Wine's reading is the host's (the In side).
        wb, wa = as_wine_reads(before[0]), as_wine_reads(after[0])
        for group in ("Icmp", "IcmpMsg"):
            hold(group, snmp_[group], wb[group], wa[group])
        def received(groups: Dict[str, int]) -> Dict[str, int]:
            return {f: v for f, v in groups.items() if f.startswith("In")}

        hold("IcmpMsg", received(snmp_["IcmpMsg"]), received(before[0].get("IcmpMsg", {})),
             received(after[0].get("IcmpMsg", {})))
        for group in ("Ip6", "Icmp6", "Udp6"):
            hold(group, snmp6_[group], before[1].get(group, {}), after[1].get(group, {}))
        api = files["tcp.api"].decode()
        assert snmp_["Tcp"] == decode.tcp_both(decode.tcp((api, files["tcp4.bin"])),
                                               decode.tcp((api, files["tcp6.bin"])))

    # Traffic the counters can see move: a datagram to a closed port (Udp NoPorts, Icmp
    # DestUnreachs, IcmpMsg types 3) on each family.
    for fam, addr in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        try:
            with socket.socket(fam, socket.SOCK_DGRAM) as s:
                s.sendto(b"x", (addr, 9))
        except OSError:
            pass  # no IPv6 here
    bracketed(proc_tables, wine.run, check)


# --- netstat -e --------------------------------------------------------------------------------

def sys_net(dev: str, attr: str) -> Optional[str]:
    try:
        with open(f"/sys/class/net/{dev}/{attr}") as f:
            return f.read().strip()
    except OSError:
        return None


def test_interfaces_are_the_hosts(wine: Wine) -> None:
    """GetIfTable2 lists this host's interfaces under their Linux names, with /proc/net/dev's
    counters (bracketed), /sys/class/net's MTU and whether they are up."""
    def measure() -> Dict[str, Dict[str, int]]:
        d = netdev.read_netdev("/proc")
        assert d
        return d

    def check(before: Dict[str, Dict[str, int]], files: Dict[str, bytes],
              after: Dict[str, Dict[str, int]]) -> None:
        rows = decode.interface_rows(files["if.bin"])
        assert {r.alias for r in rows} == set(after) == set(before)
        for r in rows:
            for col, v in r.link.counters.items():
                if col == "receive_unknown_protocols":
                    assert v == 0  # not a Linux counter: Wine has nothing to put there
                    continue
                between(f"{r.alias} {col}", before[r.alias][col], v, after[r.alias][col])
            assert r.link.mtu == int(sys_net(r.alias, "mtu") or 0)
            oper = sys_net(r.alias, "operstate")
            if oper in ("up", "down"):
                assert r.link.up is (oper == "up"), r.alias

    bracketed(measure, wine.run, check)


# --- netstat -r --------------------------------------------------------------------------------

def test_routes_are_the_hosts(wine: Wine, monkeypatch: pytest.MonkeyPatch) -> None:
    """GetIpForwardTable2 gives /proc/net/route's IPv4 routes: destination, gateway, interface
    and metric each. Wine 8 lists no IPv6 route; those it would list must be the host's."""
    files = wine.run()
    got = files_system(monkeypatch, files).routes()
    v4 = route.read_route("/proc") or []
    v6 = [r for r in route.read_ipv6_route("/proc") or [] if route.in_main_table(r)]

    def key(r: route.Route) -> Tuple[str, str, str, str, int]:
        return (r.family, r.destination, r.gateway, r.interface, r.metric)

    assert got is not None and v4
    assert sorted(key(r) for r in got if r.family == "ipv4") == sorted(key(r) for r in v4)
    assert {key(r) for r in got if r.family == "ipv6"} <= {key(r) for r in v6}


# --- netstat -ano ------------------------------------------------------------------------------

Row = Tuple[str, int, str, int, str, int]  # family, state, local, lport, remote, rport
Ends = Set[Tuple[str, int, str, int]]  # local, lport, remote, rport


def ss_rows(proto: str, ends: Ends) -> Set[Row]:
    """The rows of `ss -tan`/`ss -uan` that are sockets of ``ends`` (so not an older socket of
    another test that had one of the same port numbers)."""
    out = subprocess.run(["ss", "-Hn", "-t" if proto == "tcp" else "-u", "-a"],
                         capture_output=True, text=True, check=True, timeout=30).stdout
    rows = set()
    for line in out.splitlines():
        f = line.split()
        state, local, remote = f[0], f[3], f[4]
        (la, lp), (ra, rp) = (x.rsplit(":", 1) for x in (local, remote))
        fam = "ipv6" if la.startswith("[") else "ipv4"
        la, ra = la.strip("[]"), ra.strip("[]")
        la = "::" if la == "*" and fam == "ipv6" else ("0.0.0.0" if la == "*" else la)
        ra = ("::" if fam == "ipv6" else "0.0.0.0") if ra == "*" else ra
        lport, rport = int(lp), 0 if rp == "*" else int(rp)
        if (la, lport, ra, rport) in ends:
            rows.add((fam, STATE_NUMBERS[SS_STATE[state]], la, lport, ra, rport))
    return rows


def conn_rows(conns: List[Any], ends: Ends) -> Set[Row]:
    return {(c.family, c.state, c.local, c.lport, c.remote, c.rport) for c in conns
            if (c.local, c.lport, c.remote, c.rport) in ends}


def end(sock: socket.socket, connected: bool = True) -> Tuple[str, int, str, int]:
    local = sock.getsockname()
    if not connected:
        return local[0], local[1], "::" if sock.family == socket.AF_INET6 else "0.0.0.0", 0
    remote = sock.getpeername()
    return local[0], local[1], remote[0], remote[1]


def have_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_tcp_table_is_ss(wine: Wine) -> None:
    """GetExtendedTcpTable(TCP_TABLE_OWNER_PID_ALL) of both families against `ss -tan`, on
    sockets of known ports in LISTEN, ESTABLISHED, FIN_WAIT2 and CLOSE_WAIT."""
    with ExitStack() as stack:
        ends: Ends = set()
        families = [(socket.AF_INET, "127.0.0.1")] + \
            ([(socket.AF_INET6, "::1")] if have_ipv6() else [])
        for fam, addr in families:
            lsn = stack.enter_context(socket.socket(fam, socket.SOCK_STREAM))
            lsn.bind((addr, 0))
            lsn.listen(8)
            ends.add(end(lsn, connected=False))
            for closing in (False, True):
                cli = stack.enter_context(socket.create_connection((addr, lsn.getsockname()[1])))
                srv = stack.enter_context(lsn.accept()[0])
                ends |= {end(cli), end(srv)}
                if closing:  # the client's FIN: client FIN_WAIT2, server CLOSE_WAIT
                    cli.shutdown(socket.SHUT_WR)
                    assert srv.recv(1) == b""
        time.sleep(0.2)
        files = wine.run()
        got = conn_rows(decode.tcp_table(files["tcptable4.bin"], AF_INET) +
                        decode.tcp_table(files["tcptable6.bin"], AF_INET6), ends)
        want = ss_rows("tcp", ends)
    states = {s for (_, s, *_rest) in want}
    assert states == {10, 1, 5, 8}, states  # listen, established, fin_wait2, close_wait
    assert len(want) == len(ends) == 5 * len(families)
    assert got == want


def test_udp_table_is_ss(wine: Wine) -> None:
    """GetExtendedUdpTable(UDP_TABLE_OWNER_PID) against `ss -uan` on sockets of known ports
    (unconnected: the table has no remote end, so connected sockets are left out)."""
    with ExitStack() as stack:
        ends: Ends = set()
        for fam, addr in [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET, "0.0.0.0")] + \
                ([(socket.AF_INET6, "::1")] if have_ipv6() else []):
            s = stack.enter_context(socket.socket(fam, socket.SOCK_DGRAM))
            s.bind((addr, 0))
            ends.add(end(s, connected=False))
        files = wine.run()
        got = conn_rows(decode.udp_table(files["udptable4.bin"], AF_INET) +
                        decode.udp_table(files["udptable6.bin"], AF_INET6), ends)
        want = ss_rows("udp", ends)
    assert len(want) == len(ends)
    assert got == want
