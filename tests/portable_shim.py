"""Run the exporter as it would start on a system without Linux's (or Unix's) modules:
``python tests/portable_shim.py ARGS`` is ``netstat-exporter ARGS`` where this package cannot
import pwd, grp, fcntl, resource or termios, and socket.AF_NETLINK, signal.SIGHUP, os.getuid and
os.pread do not exist.

The imports are refused to this package only: psutil's Linux half, which stands in here for its
Windows and macOS halves, needs ``resource``. sys.platform is left alone: click would then import
msvcrt and urllib _scproxy, which Linux lacks.
"""

import builtins
import os
import signal
import socket
import sys
from typing import Any

BLOCKED = {"pwd", "grp", "fcntl", "resource", "termios"}
_real_import = builtins.__import__


def _guarded(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (),
             level: int = 0) -> Any:
    importer = str((globals or {}).get("__name__") or "")
    if level == 0 and name.split(".")[0] in BLOCKED and importer.split(".")[0] == "exporter":
        raise ImportError(f"No module named {name!r} (not on this system; imported by {importer})")
    return _real_import(name, globals, locals, fromlist, level)


builtins.__import__ = _guarded
for _mod, _attr in ((socket, "AF_NETLINK"), (signal, "SIGHUP"), (os, "getuid"), (os, "pread")):
    if hasattr(_mod, _attr):
        delattr(_mod, _attr)

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from exporter.cli import main

    main(sys.argv[1:])
