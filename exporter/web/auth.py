"""Basic authentication against bcrypt hashes (exporter-toolkit's ``basic_auth_users``)."""

from __future__ import annotations

import base64
import binascii
import collections
import hashlib
import hmac
import secrets
import threading
from typing import Any, Dict, Optional, Tuple

from exporter.install import WEB, install_command
from exporter.web.errors import WebConfigExtraMissingError

# bcrypt uses at most 72 bytes of a password (OpenBSD bcrypt.c, BCRYPT_MAXKEY... 72).
BCRYPT_MAX_PASSWORD = 72


def import_bcrypt() -> Any:
    try:
        import bcrypt
    except ImportError:
        raise WebConfigExtraMissingError(
            "basic_auth_users in --web.config.file needs bcrypt: install it with: "
            f"{install_command(*WEB)}") from None
    return bcrypt


_dummy_lock = threading.Lock()
_dummy_hashes: Dict[int, bytes] = {}


def _dummy_hash(cost: int) -> bytes:
    """A hash of a random password at ``cost``, checked for unknown users so that they cost
    the same bcrypt work as a wrong password (exporter-toolkit uses a fixed cost-10 hash,
    which is faster than users' hashes of higher cost: a timing oracle we avoid)."""
    with _dummy_lock:
        if cost not in _dummy_hashes:
            bcrypt = import_bcrypt()
            _dummy_hashes[cost] = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(cost))
        return _dummy_hashes[cost]


class BasicAuth:
    """Checks ``Authorization: Basic`` headers against bcrypt hashes.

    Results (success and failure) are cached by (user, hash, sha256(password)) in a bounded
    LRU, like exporter-toolkit's cache, so a scrape every few seconds does not pay bcrypt's
    deliberate cost each time. bcrypt runs under a lock, one check at a time, so a flood of
    guesses costs one core at most.
    """

    CACHE_SIZE = 100

    def __init__(self, users: Tuple[Tuple[str, bytes], ...]) -> None:
        self._users = [(u.encode("utf-8"), h) for u, h in users]
        costs = collections.Counter(int(h[4:6]) for _, h in users)
        # The cost most users have (ties: the higher) for the dummy hash.
        self._dummy = _dummy_hash(max(costs, key=lambda c: (costs[c], c))) if users else b""
        self._cache: collections.OrderedDict[Tuple[bytes, bytes, bytes], bool] = (
            collections.OrderedDict())
        self._cache_lock = threading.Lock()
        self._bcrypt_lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self._users)

    def _lookup(self, user: bytes) -> Optional[bytes]:
        # Compare against every user without stopping early, in constant time per name.
        found = None
        for name, hashed in self._users:
            if hmac.compare_digest(name, user):
                found = hashed
        return found

    def check(self, header: Optional[str]) -> bool:
        """True if ``header`` (the Authorization value) names a user and its password."""
        creds = parse_basic(header)
        if creds is None:
            return False
        user, password = creds
        hashed = self._lookup(user)
        valid_user = hashed is not None
        target = hashed if hashed is not None else self._dummy
        key = (user, target, hashlib.sha256(password).digest())
        with self._cache_lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached and valid_user
        bcrypt = import_bcrypt()
        with self._bcrypt_lock:
            # bcrypt reads at most 72 bytes; the library refuses longer input. Do the same
            # work on the first 72 bytes, and refuse the longer password afterwards.
            ok = bool(bcrypt.checkpw(password[:BCRYPT_MAX_PASSWORD], target))
        ok = ok and valid_user and len(password) <= BCRYPT_MAX_PASSWORD
        with self._cache_lock:
            self._cache[key] = ok
            self._cache.move_to_end(key)
            while len(self._cache) > self.CACHE_SIZE:
                self._cache.popitem(last=False)
        return ok


def parse_basic(header: Optional[str]) -> Optional[Tuple[bytes, bytes]]:
    """``Basic base64(user:password)`` -> (user, password) as bytes, or None if malformed."""
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, sep, password = raw.partition(b":")
    if not sep:
        return None
    return user, password
