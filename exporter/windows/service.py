"""The exporter as a Windows service: ``netstat-exporter service install [FLAGS...]`` and
``netstat-exporter service remove``, through pywin32's service support (the ``windows`` extra:
``pip install '.[windows]'``), run as Administrator.

The service is pywin32's pythonservice.exe hosting :class:`ExporterService`, under LocalSystem
(what Windows needs for every listener's program to be named). It runs :func:`command`, the
exporter with the flags given at install (``Flags``) in the Python that installed it
(``Python``), both kept as the service's parameters in the registry, and stops it when the
service is stopped. The exporter's log goes to ``Log`` (next to that Python).

Everything but the calls into pywin32 is plain Python, tested on Linux.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import Any, Dict, List, Optional, Sequence

NAME = "netstat-exporter"
DISPLAY = "Prometheus netstat exporter"
DESCRIPTION = ("Serves what netstat -ano, -b, -s, -e and -r show as Prometheus metrics "
               "(https://prometheus.io/docs/instrumenting/exporters/).")
CLASS = "exporter.windows.service.ExporterService"  # what pythonservice.exe loads
CREATE_NO_WINDOW = 0x08000000  # winbase.h: the exporter's console stays hidden


def command(python: str, flags: Sequence[str]) -> List[str]:
    """What the service runs: the exporter, in ``python``, with ``flags``."""
    return [python, "-m", "exporter", *flags]


def parameters(python: str, flags: Sequence[str]) -> Dict[str, str]:
    """The service's parameters, as install() stores them in the registry."""
    return {"Python": python, "Flags": json.dumps(list(flags)),
            "Log": os.path.join(os.path.dirname(python), "netstat-exporter.log")}


def install(flags: Sequence[str], python: Optional[str] = None) -> None:
    """Register the service (started at boot, as LocalSystem) with ``flags``."""
    import win32service
    import win32serviceutil

    win32serviceutil.InstallService(CLASS, NAME, DISPLAY,
                                    startType=win32service.SERVICE_AUTO_START,
                                    description=DESCRIPTION)
    for key, value in parameters(python or sys.executable, flags).items():
        win32serviceutil.SetServiceCustomOption(NAME, key, value)


def remove() -> None:
    """Stop the service if it runs, and unregister it."""
    import pywintypes
    import win32serviceutil

    with contextlib.suppress(pywintypes.error):  # not running
        win32serviceutil.StopService(NAME)
    win32serviceutil.RemoveService(NAME)


try:  # pywin32, on Windows with the windows extra
    import servicemanager
    import win32event
    import win32service
    import win32serviceutil
except ImportError:
    win32serviceutil = None

if win32serviceutil is not None:
    import subprocess

    class ExporterService(win32serviceutil.ServiceFramework):  # type: ignore[misc]
        _svc_name_ = NAME
        _svc_display_name_ = DISPLAY
        _svc_description_ = DESCRIPTION

        def __init__(self, args: Any) -> None:
            super().__init__(args)
            self.stop = win32event.CreateEvent(None, 0, 0, None)

        def SvcStop(self) -> None:  # noqa: N802  (pywin32's name)
            self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING)
            win32event.SetEvent(self.stop)

        def SvcDoRun(self) -> None:  # noqa: N802
            def option(key: str) -> str:
                return str(win32serviceutil.GetServiceCustomOption(NAME, key))

            argv = command(option("Python"), json.loads(option("Flags")))
            with open(option("Log"), "ab") as log:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        creationflags=CREATE_NO_WINDOW)
                while win32event.WaitForSingleObject(self.stop, 1000) != win32event.WAIT_OBJECT_0:
                    if proc.poll() is not None:
                        servicemanager.LogErrorMsg(
                            f"{NAME} exited with status {proc.returncode}; see {option('Log')}")
                        return
                proc.terminate()
                proc.wait(timeout=30)
