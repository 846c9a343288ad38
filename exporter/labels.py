"""Names read from the kernel (interface names), made into label values.

Readers decode /proc and /sys as UTF-8 with ``surrogateescape`` (exporter.procfs.ENCODING), as
Python decodes file names: a device named in UTF-8, which Linux allows (net/core/dev.c
dev_valid_name refuses only "/", ":" and white space), keeps its real name, and a name that is
not UTF-8 keeps its bytes, so it can still be looked up in sysfs. Label values must be UTF-8
text, so such bytes become ``\\xNN`` escapes here, which keeps two different names two series.
"""

from __future__ import annotations


def label_value(name: str) -> str:
    """``name`` as a label value: itself when it is valid UTF-8, else with \\xNN escapes."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
