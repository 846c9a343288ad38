from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import pytest

# Tests import the package from the work tree, whether or not it is installed.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if TYPE_CHECKING:
    from tlshelpers import PKI


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    """A throwaway CA with server and client certificates, one per test module."""
    from tlshelpers import make_pki  # the test extra's cryptography, loaded only when asked
    return make_pki(str(tmp_path_factory.mktemp("pki")))
