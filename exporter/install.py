"""How to install what an optional feature needs, said for the way this exporter was installed.

The package is not on an index, so ``pip install 'netstat-exporter[web]'`` cannot work; what
does is installing the missing libraries into the Python that runs the exporter: with that
Python's own pip in a virtual environment (as the README installs it), or with the system's
package manager for Debian's own Python, whose pip refuses to install (PEP 668).
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Dict

# PyPI name -> Debian package, for the libraries of the optional features.
DEBIAN: Dict[str, str] = {"PyYAML": "python3-yaml", "bcrypt": "python3-bcrypt"}
# What --web.config.file and YAML files need (the 'web' extra of pyproject.toml).
WEB = ("PyYAML", "bcrypt")


def _in_venv() -> bool:
    return sys.prefix != getattr(sys, "base_prefix", sys.prefix)


def install_command(*packages: str) -> str:
    """A shell command that installs ``packages`` (PyPI names) where this exporter runs."""
    if not _in_venv() and os.path.exists("/etc/debian_version") \
            and sys.executable.startswith("/usr/bin/") and all(p in DEBIAN for p in packages):
        return "apt-get install " + " ".join(DEBIAN[p] for p in packages)
    # Absolute: the command may be pasted in another directory than the exporter was started in.
    return " ".join([shlex.quote(os.path.abspath(sys.executable)), "-m", "pip", "install",
                     *(shlex.quote(p) for p in packages)])
