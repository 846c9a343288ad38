"""Network namespaces of the host: finding each one once, and naming it.

Two sources, both under the procfs root:

* ``<root>/<pid>/ns/net`` of every process. ``stat`` follows the magic link to the nsfs inode;
  (st_dev, st_ino) identifies the namespace (fs/nsfs.c, ns_get_path; the same pair ``lsns``
  and ``ip netns identify`` use). Stat of another user's ``ns/net`` needs ptrace read access
  (CAP_SYS_PTRACE; proc_ns_get_link calls ptrace_may_access). Without it the process is keyed
  by the inode of its ``net/snmp`` entry instead: the per-namespace proc_dir_entry that
  /proc/<pid>/net shows (fs/proc/proc_net.c; proc_get_inode uses the entry's low_ino), which
  any user may stat and which is allocated once per namespace.
* nsfs mounts in ``<root>/1/mountinfo``: namespaces pinned by ``ip netns add`` (/run/netns/NAME),
  CNI plugins or Docker (/run/docker/netns/ID), which may have no process left. The mountinfo
  line carries the nsfs device (``0:4``) and the inode in its root field (``net:[4026532177]``),
  so no stat is needed (fs/proc_namespace.c show_mountinfo, fs/nsfs.c ns_dname).

Naming (:func:`identify`): the pod UID from the cgroup path of a process in the namespace
(/proc/<pid>/cgroup; kubelet's cgroupfs and systemd drivers, static pods, cgroup v1 and v2),
else a container id (containerd, CRI-O, Docker, Podman), else the ``ip netns`` name of a mount,
and the host's namespace (pid 1's, or the reader's own when pid 1's cannot be read) marked as
such. Nothing here imports Prometheus: these are pure readers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from exporter.procfs import read_path
from exporter.procfs.errors import ParseError

# How a namespace was keyed: "nsfs" (st_dev, st_ino of ns/net, or a nsfs mount) or "pde" (the
# inode of <root>/<pid>/net/snmp, when ns/net cannot be stat'ed). Keys of the two kinds never
# compare equal: without ptrace access a pinned namespace cannot be matched to its processes.
NsKey = Tuple[str, int, int]


@dataclass
class Namespace:
    """One network namespace: its key, the processes in it (ascending) and its nsfs mounts."""

    key: NsKey
    pids: List[int] = field(default_factory=list)
    mounts: List[str] = field(default_factory=list)
    host: bool = False

    @property
    def inode(self) -> int:
        return self.key[2]


@dataclass
class Discovery:
    """What one walk of the procfs root found."""

    namespaces: List[Namespace]
    host: Optional[NsKey]
    # Pinned namespaces that could not be matched to processes because some processes were
    # keyed without ptrace access: they may be the same namespaces, so they are not listed.
    unmatched_mounts: int = 0


# --- mountinfo ---------------------------------------------------------------------------------

_ESCAPE = re.compile(r"\\([0-7]{3})")
_NSFS_ROOT = re.compile(r"^net:\[(\d+)\]$")


def _unescape(text: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo (fs/proc_namespace.c
    mangle, seq_escape)."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


def parse_mountinfo_nsfs(text: str, path: str) -> List[Tuple[NsKey, str]]:
    """The network-namespace nsfs mounts of a mountinfo file: ``[(key, mount point)]``.

    Line format (Documentation/filesystems/proc.rst, 3.5)::

        43 42 0:4 net:[4026532177] /run/netns/blue rw shared:2 - nsfs nsfs rw

    Raises ParseError naming the line for a line without the ``-`` separator or with a
    malformed device.
    """
    out: List[Tuple[NsKey, str]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if " nsfs " not in line:
            # Not a namespace mount (fields never hold a space: mountinfo escapes it), only
            # checked for the separator: a host has hundreds of these lines.
            if " - " in line or not line.strip():
                continue
            if not line.endswith(" -"):
                raise ParseError(path, "expected optional fields ended by ' - '", n)
        f = line.split()
        try:
            sep = f.index("-", 6)
        except ValueError:
            raise ParseError(path, "expected optional fields ended by ' - '", n) from None
        if sep + 1 >= len(f):
            raise ParseError(path, "no filesystem type after ' - '", n)
        if f[sep + 1] != "nsfs":
            continue
        m = _NSFS_ROOT.match(f[3])
        if m is None:
            continue  # another namespace type (mnt:[...], uts:[...])
        major, colon, minor = f[2].partition(":")
        if not colon or not major.isdigit() or not minor.isdigit():
            raise ParseError(path, f"malformed device {f[2]!r}", n)
        out.append((("nsfs", os.makedev(int(major), int(minor)), int(m.group(1))),
                    _unescape(f[4])))
    return out


def read_pinned(root: str) -> Optional[List[Tuple[NsKey, str]]]:
    """nsfs mounts of network namespaces in ``<root>/1/mountinfo``; None when it cannot be
    read (no ptrace access to pid 1 in some sandboxes)."""
    path = os.path.join(root, "1", "mountinfo")
    try:
        text = read_path(path, "replace")
    except OSError:
        return None
    return parse_mountinfo_nsfs(text, path)


# --- processes ---------------------------------------------------------------------------------

def pid_key(root: str, pid: int) -> Tuple[Optional[NsKey], bool]:
    """The key of ``pid``'s namespace and whether it took the unprivileged way (net/snmp);
    ``(None, False)`` when the process is gone."""
    base = f"{root}/{pid}"  # a stat per process of the machine: no os.path.join
    try:
        st = os.stat(f"{base}/ns/net")
        return ("nsfs", st.st_dev, st.st_ino), False
    except PermissionError:
        pass
    except OSError:
        return None, False
    try:
        st = os.stat(f"{base}/net/snmp")
    except OSError:
        return None, False
    return ("pde", st.st_dev, st.st_ino), True


def list_pids(root: str) -> List[int]:
    """Process ids under the procfs root, ascending."""
    try:
        names = os.listdir(root)
    except OSError:
        return []
    return sorted(int(n) for n in names if n.isdigit())


def own_key(root: str) -> Optional[NsKey]:
    """The key of the reader's own namespace (``<root>/self``)."""
    try:
        st = os.stat(os.path.join(root, "self", "ns", "net"))
    except OSError:
        return None
    return ("nsfs", st.st_dev, st.st_ino)


def _merge_pde(root: str, by_key: Dict[NsKey, Namespace]) -> None:
    """Fold the processes keyed by net/snmp into the nsfs-keyed namespace they belong to: one
    more stat per namespace, done only when some processes could not be keyed by nsfs."""
    pde_of: Dict[NsKey, NsKey] = {}
    for key, ns in by_key.items():
        if key[0] == "nsfs":
            for pid in ns.pids[:3]:  # the first may exit meanwhile
                try:
                    st = os.stat(os.path.join(root, str(pid), "net", "snmp"))
                except OSError:
                    continue
                pde_of[("pde", st.st_dev, st.st_ino)] = key
                break
    for key in [k for k in by_key if k[0] == "pde" and k in pde_of]:
        target = by_key[pde_of[key]]
        target.pids = sorted(target.pids + by_key.pop(key).pids)


def discover(root: str, pids: Optional[Sequence[int]] = None) -> Discovery:
    """Every network namespace once: the processes' ones, then pinned ones with no process.

    Processes are kept in ascending pid order in each namespace; namespaces are ordered host
    first, then by the lowest pid, then the pinned ones by inode, so the order (which decides
    what a cap on namespaces leaves out) is stable from scrape to scrape.
    """
    by_key: Dict[NsKey, Namespace] = {}
    unprivileged = 0
    for pid in (list_pids(root) if pids is None else pids):
        key, unpriv = pid_key(root, pid)
        if key is None:
            continue  # exited while being read
        unprivileged += unpriv
        ns = by_key.get(key)
        if ns is None:
            ns = by_key[key] = Namespace(key)
        ns.pids.append(pid)

    if unprivileged:
        _merge_pde(root, by_key)
    host_key = next((k for k, ns in by_key.items() if 1 in ns.pids), None)
    if host_key is None:
        host_key = own_key(root)
    if host_key is not None and host_key in by_key:
        by_key[host_key].host = True

    pinned = read_pinned(root)
    unmatched = set()
    extra: List[Namespace] = []
    # A mount can be told apart from the processes' namespaces only when all of them are
    # keyed by nsfs (after merging).
    blind = any(k[0] == "pde" for k in by_key)
    for key, mount in pinned or ():
        ns = by_key.get(key)
        if ns is not None:
            ns.mounts.append(mount)
        elif blind:
            unmatched.add(key)
        else:
            ns = by_key[key] = Namespace(key, mounts=[mount])
            extra.append(ns)

    with_pids = sorted((ns for ns in by_key.values() if ns.pids),
                       key=lambda ns: (not ns.host, ns.pids[0]))
    return Discovery(with_pids + sorted(extra, key=lambda ns: ns.inode),
                     host_key if host_key in by_key else None, len(unmatched))


# --- naming ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Identity:
    """Who a namespace belongs to. ``kind`` is host, pod, container, named or anonymous;
    ``netns`` is the one stable name used as a label (the pod UID, the container id, the
    ``ip netns`` name, ``host``, or ``inode-<n>`` for a namespace nothing names)."""

    kind: str
    netns: str
    pod_uid: str = ""
    container_id: str = ""
    name: str = ""


# A pod's cgroup directory: cgroupfs driver "pod<uid>" (…/kubepods/burstable/pod<uid>/…), systemd
# driver "kubepods-<qos>-pod<uid with _ for ->.slice" (pkg/kubelet/cm/cgroup_manager_linux.go,
# ToSystemd escapes '-' as '_'). Static pods carry the config hash as UID: 32 hex digits without
# dashes (pkg/kubelet/config/common.go, generatePodName/applyDefaults).
_UUID = r"[0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12}"
_POD = re.compile(r"(?:^|/)(?:kubepods[\w-]*?-)?pod(" + _UUID + r"|[0-9a-fA-F]{32})"
                  r"(?:\.slice)?(?=/|$)")
# A container's cgroup directory: cgroupfs "<id>" (containerd, Docker's /docker/<id>), systemd
# "cri-containerd-<id>.scope", "crio-<id>.scope", "docker-<id>.scope", "libpod-<id>.scope".
# CRI-O's monitor runs in "crio-conmon-<id>.scope", which is not the container.
_CONTAINER = re.compile(r"(?:^|/)(?:cri-containerd-|crio-|docker-|libpod-|containerd-)?"
                        r"([0-9a-f]{64})(?:\.scope)?(?=/|$)")


def parse_cgroup(text: str, path: str) -> List[str]:
    """The cgroup paths of /proc/<pid>/cgroup, one per hierarchy (``hierarchy:controllers:path``
    lines; cgroup v2 is the single ``0::/path``; kernel/cgroup/cgroup.c proc_cgroup_show)."""
    out: List[str] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        f = line.split(":", 2)
        if len(f) != 3 or not f[0].isdigit():
            raise ParseError(path, "expected 'hierarchy:controllers:path'", n)
        out.append(f[2])
    return out


def read_cgroup(root: str, pid: int) -> Optional[List[str]]:
    """``<root>/<pid>/cgroup``; None when the process is gone or the file unreadable."""
    path = os.path.join(root, str(pid), "cgroup")
    try:
        return parse_cgroup(read_path(path, "replace"), path)
    except OSError:
        return None


def pod_and_container(paths: Iterable[str]) -> Tuple[str, str]:
    """(pod UID with dashes, container id) named by cgroup paths; "" for what none names.

    With its own cgroup namespace the reader sees other pods' paths relative to its root
    (``/../../kubepods.slice/…``); the patterns match anywhere in the path for that reason.
    """
    pod = container = ""
    for p in paths:
        p = p.rstrip("/")
        if not pod and "kubepods" in p:
            m = _POD.search(p)
            if m:
                uid = m.group(1).replace("_", "-").lower()
                pod = uid
        if not container and "crio-conmon-" not in p:
            # The innermost match: Podman puts processes in libpod-<id>.scope/container.
            ids = _CONTAINER.findall(p)
            if ids:
                container = ids[-1]
    return pod, container


def netns_name(mount: str) -> str:
    """The ``ip netns`` style name of a nsfs mount: its file name when it lives in a directory
    named ``netns`` (/run/netns/NAME, /var/run/netns/NAME, /run/docker/netns/ID), else ""."""
    parent, name = os.path.split(mount.rstrip("/"))
    return name if os.path.basename(parent) == "netns" else ""


def identify(ns: Namespace, cgroups: Iterable[Optional[List[str]]]) -> Identity:
    """Name ``ns`` from the cgroup paths of some of its processes (in pid order; reading stops
    at the first that names a pod) and its mounts."""
    if ns.host:
        return Identity("host", "host")
    container = ""
    for paths in cgroups:
        if paths is None:
            continue
        pod, cid = pod_and_container(paths)
        if pod:
            return Identity("pod", pod, pod_uid=pod, container_id=container or cid)
        container = container or cid
    name = next((n for n in map(netns_name, ns.mounts) if n), "")
    if container:
        return Identity("container", container, container_id=container, name=name)
    if name:
        return Identity("named", name, name=name)
    return Identity("anonymous", f"inode-{ns.inode}")


# The processes of a namespace whose cgroups name it (the lowest pids).
NAMING_PIDS = 4


def name_namespace(root: str, ns: Namespace, max_pids: int = NAMING_PIDS) -> Identity:
    """:func:`identify` reading the cgroups of at most ``max_pids`` of the namespace's
    processes (the lowest pids: in a pod, the sandbox's pause process comes first)."""
    return identify(ns, (read_cgroup(root, pid) for pid in ns.pids[:max_pids]))


def unique_labels(idents: Sequence[Identity], keys: Sequence[NsKey]) -> List[Identity]:
    """The identities with ``netns`` made unique: a second namespace claiming the same name (a
    pod's sandbox being replaced, two pinned mounts of one name) gets ``<name>/inode-<n>``."""
    seen: Dict[str, int] = {}
    out: List[Identity] = []
    for ident, key in zip(idents, keys):
        if ident.netns in seen:
            ident = Identity(ident.kind, f"{ident.netns}/inode-{key[2]}", ident.pod_uid,
                             ident.container_id, ident.name)
        seen[ident.netns] = 1
        out.append(ident)
    return out
