"""The platform seam: one :class:`~exporter.system.common.System` per operating system, chosen
once, at start, from ``sys.platform`` (or ``--platform=portable``).

Laid out as psutil lays out its systems: one public API (:mod:`exporter.system.common`), one
private module per system behind it (``_linux``, ``_windows``, ``_darwin``), each importing
only what runs there, and the native calls of Windows and macOS kept apart from the Python that
decodes their results (:mod:`exporter.windows`, :mod:`exporter.darwin`). A collector asks
:func:`load` for its system and never tests the platform itself.

``portable`` is what every other system runs (psutil alone), and what ``--platform=portable``
runs on Linux: the code that Windows and macOS share, tested here on every run.
"""

from __future__ import annotations

import functools
import importlib
import sys
from typing import Any, Iterable, Type

from exporter.config import Config
from exporter.system._psutil import Owners as PsutilOwners
from exporter.system.common import (
    Conn,
    Groups,
    Link,
    PlatformError,
    ProtocolTables,
    System,
    Unavailable,
)

__all__ = ["PsutilOwners", "Conn", "Groups", "Link", "ProtocolTables", "System", "Unavailable", "PLATFORMS",
           "PlatformError", "native", "resolve", "load", "load_named", "system_class", "check"]

PLATFORMS = ("auto", "portable")
# sys.platform -> the module of that system. Anything else psutil supports is portable.
_MODULES = {"linux": "_linux", "windows": "_windows", "darwin": "_darwin"}


def native() -> str:
    """The system this interpreter runs on: linux, windows, darwin, or portable."""
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform == "win32":
        return "windows"
    if sys.platform == "darwin":
        return "darwin"
    return "portable"


def resolve(platform: str) -> str:
    """``--platform``'s value as the name of a system: ``auto`` is :func:`native`."""
    if platform not in PLATFORMS:
        raise PlatformError(f"--platform {platform!r}: expected one of {', '.join(PLATFORMS)}")
    return native() if platform == "auto" else "portable"


@functools.lru_cache(maxsize=8)
def load_named(name: str, procfs: str = "/proc", sysfs: str = "/sys") -> System:
    """The system called ``name`` (one of :func:`resolve`'s answers), reading ``procfs`` and
    ``sysfs`` where it has them; one instance per arguments, shared by the collectors."""
    cls: Any = system_class(name)
    return cls(procfs, sysfs) if cls.has_procfs else cls()  # type: ignore[no-any-return]


def system_class(name: str) -> Type[System]:
    """The class of the system called ``name``, imported but not started (every system's module
    imports on every system: their native libraries are loaded on first call)."""
    module = _MODULES.get(name)
    if module is None:
        return System
    try:
        return importlib.import_module(f"exporter.system.{module}").SYSTEM  # type: ignore[no-any-return]
    except ModuleNotFoundError:
        return System  # a system whose native half this build leaves out: the portable part


def load(config: Config) -> System:
    """The system of ``config``."""
    name = resolve(config.system) if config.system in PLATFORMS else config.system
    return load_named(name, config.procfs, config.sysfs)


def check(system: System, enabled: Iterable[str], given: Iterable[str]) -> None:
    """Refuse, in one line, what means nothing on ``system``: a collector it cannot serve that
    was asked for by name (``enabled``), or a flag (``given``: flags set to other than their
    default) of such a collector or of a path it does not have."""
    for flag in given:
        if flag in ("--path.procfs", "--path.sysfs") and not system.has_procfs:
            raise PlatformError(f"{flag} means nothing on {system.name}: there is no procfs "
                                "or sysfs to read there")
        name = flag[len("--collector."):].split(".")[0] if flag.startswith("--collector.") \
            else ""
        if name and name not in system.collectors:
            raise PlatformError(f"{flag} means nothing on {system.name}: the {name} collector "
                                "is not available there")
    for name in enabled:
        if name not in system.collectors:
            raise PlatformError(f"--collector.{name}: the {name} collector is not available on "
                                f"{system.name} (available there: "
                                f"{', '.join(sorted(system.collectors))})")
