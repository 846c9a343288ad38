"""/sys/class/net/<device>/{operstate,flags,carrier,mtu,speed}: interface state.

Attributes come from net/core/net-sysfs.c. Reading some of them fails on purpose: ``speed``
returns EINVAL for a device that is down or has no notion of speed (loopback, tun, bridges,
ethtool_ops without get_link_ksettings), and prints -1 (SPEED_UNKNOWN) for some drivers;
``carrier`` returns EINVAL while the device is administratively down. Those are "unknown", not
errors. sysfs shows the devices of the network namespace it was mounted in (``ip netns exec``
mounts a fresh one).
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from typing import Optional

from exporter.procfs import read_path
from exporter.procfs.errors import ParseError

IFF_UP = 0x1  # include/uapi/linux/if.h


@dataclass(frozen=True)
class NetClass:
    operstate: Optional[str]  # RFC 2863 operstate: "up", "down", "unknown", "dormant", ...
    flags: Optional[int]  # dev->flags (IFF_*); IFF_UP is the administrative state
    carrier: Optional[int]
    mtu: Optional[int]
    speed_mbps: Optional[int]  # None when unknown (-1 or unreadable)

    @property
    def up(self) -> Optional[bool]:
        """Operationally up. Devices without an operstate of their own (loopback, many tunnels)
        report "unknown" (IF_OPER_UNKNOWN, Documentation/networking/operstates.rst); for them
        the administrative state (IFF_UP) and, where readable, the carrier decide, as ``ip link``
        shows them UP."""
        if self.operstate == "up":
            return True
        if self.operstate not in (None, "unknown"):
            return False
        if self.flags is None:
            return None
        return bool(self.flags & IFF_UP) and self.carrier != 0


def _read(path: str) -> Optional[str]:
    try:
        return read_path(path).strip()
    except FileNotFoundError:
        return None
    except OSError as e:
        # EINVAL (speed or carrier of a device that is down or has none), ENOTSUPP (524) or
        # EOPNOTSUPP from drivers without the operation: the value is unknown.
        if e.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENODEV, 524):
            return None
        raise


# Every attribute read here is an int or unsigned int in the kernel (struct net_device mtu,
# flags; ethtool speed; carrier); a wider number is not what the kernel printed.
_MIN, _MAX = -(2 ** 63), 2 ** 64 - 1
_DIGITS = {10: re.compile(r"-?[0-9]+"), 16: re.compile(r"(?:0x)?[0-9a-fA-F]+")}


def _int(path: str, text: Optional[str], base: int = 10) -> Optional[int]:
    if text is None or text == "":
        return None
    if not _DIGITS[base].fullmatch(text):
        raise ParseError(path, f"not an integer: {text[:40]!r}", 1)
    # Python refuses decimal strings over 4300 digits (sys.get_int_max_str_digits), and a
    # number past float range would fail later, in the collector, without naming the file.
    if len(text) > 40:
        raise ParseError(path, f"number out of range ({len(text)} digits)", 1)
    value = int(text, base)
    if not _MIN <= value <= _MAX:
        raise ParseError(path, f"number out of range: {text}", 1)
    return value


def read_net_class(root: str, device: str) -> Optional[NetClass]:
    """``<root>/class/net/<device>``; None when the device has no directory there."""
    d = os.path.join(root, "class", "net", device)
    if not os.path.isdir(d):
        return None
    p = {k: os.path.join(d, k) for k in ("operstate", "flags", "carrier", "mtu", "speed")}
    speed = _int(p["speed"], _read(p["speed"]))
    return NetClass(
        operstate=_read(p["operstate"]),
        flags=_int(p["flags"], _read(p["flags"]), 16),
        carrier=_int(p["carrier"], _read(p["carrier"])),
        mtu=_int(p["mtu"], _read(p["mtu"])),
        speed_mbps=speed if speed is not None and speed >= 0 else None,
    )
