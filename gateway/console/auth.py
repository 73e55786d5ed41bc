"""Console users: salted password hashes, roles, signed session cookies, login throttling.

Hashes are `scrypt$n$r$p$salt$hash` (or `pbkdf2_sha256$iterations$salt$hash`), salt and hash in
URL-safe base64, made by `python -m gateway.console hash-password`; comparisons are constant-time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections import deque
from collections.abc import Mapping

import tornado.web

from gateway.console.config import UserConfig

ROLE_RANK = {"viewer": 0, "operator": 1, "admin": 2}
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
PBKDF2_ITERATIONS = 600_000
SESSION_COOKIE = "checkgate_console"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str, scheme: str = "scrypt", iterations: int = PBKDF2_ITERATIONS) -> str:
    """A new salted hash of `password` for the config file (`iterations`: PBKDF2 only)."""
    salt = secrets.token_bytes(16)
    if scheme == "pbkdf2_sha256":
        digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
        return f"pbkdf2_sha256${iterations}${_b64(salt)}${_b64(digest)}"
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, encoded: str) -> bool:
    """Does `password` match `encoded`? Constant-time in the digest comparison; False on a bad hash."""
    try:
        scheme, *params = encoded.split("$")
        if scheme == "scrypt":
            n, r, p, salt, expected = int(params[0]), int(params[1]), int(params[2]), params[3], params[4]
            want = _unb64(expected)
            # maxmem: OpenSSL's 32 MiB default is just under what n=2**14, r=8 needs with headroom.
            got = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=n, r=r, p=p, dklen=len(want), maxmem=2**26)
        elif scheme == "pbkdf2_sha256":
            iterations, salt, expected = int(params[0]), params[1], params[2]
            want = _unb64(expected)
            got = hashlib.pbkdf2_hmac("sha256", password.encode(), _unb64(salt), iterations, len(want))
        else:
            return False
    except (ValueError, IndexError):
        return False
    return hmac.compare_digest(got, want)


# Verified against when the user name is unknown, so that case costs as much time as a wrong password.
_DUMMY_HASH = "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA$" + _b64(bytes(32))


def check_login(users: Mapping[str, UserConfig], name: str, password: str) -> UserConfig | None:
    """The user if `name` and `password` match (CPU-heavy by design: run it off the loop)."""
    user = users.get(name)
    ok = verify_password(password, user.password_hash if user else _DUMMY_HASH)
    return user if ok and user is not None else None


def allowed(role: str, needed: str) -> bool:
    """Does `role` include the rights of `needed` (viewer < operator < admin)?"""
    return ROLE_RANK.get(role, -1) >= ROLE_RANK[needed]


class LoginThrottle:
    """Failed logins allowed per `window` seconds: `per_name` for one user name from one address, and
    `per_client` in all from one address (so guessing across many names is slowed down too).

    Keyed by address *and* name so that someone hammering one account does not lock out colleagues
    behind the same NAT or proxy address.
    """

    def __init__(self, per_name: int = 5, per_client: int = 50, window: float = 300.0) -> None:
        self.limits = {"name": per_name, "client": per_client}
        self.window = window
        self._failures: dict[tuple[str, ...], deque[float]] = {}

    def _keys(self, client: str, name: str) -> list[tuple[tuple[str, ...], int]]:
        return [((client, name), self.limits["name"]), ((client,), self.limits["client"])]

    def retry_after(self, client: str, name: str) -> int:
        """Seconds this client must wait before trying this name again (0: it may try now)."""
        now = time.monotonic()
        wait = 0
        for key, limit in self._keys(client, name):
            failures = self._failures.get(key)
            while failures and failures[0] < now - self.window:
                failures.popleft()
            if failures and len(failures) >= limit:
                wait = max(wait, int(failures[0] + self.window - now) + 1)
        return wait

    def failed(self, client: str, name: str) -> None:
        for key, limit in self._keys(client, name):
            self._failures.setdefault(key, deque(maxlen=limit)).append(time.monotonic())
        while len(self._failures) > 10_000:  # bound the memory an address-rotating attacker can take
            self._failures.pop(next(iter(self._failures)))

    def succeeded(self, client: str, name: str) -> None:
        self._failures.pop((client, name), None)


class Sessions:
    """Signed session cookies (Tornado's signed values, keyed by the console secret).

    The cookie holds only the user name and the time of login; the role is looked up in the config on
    every request, so a demoted or removed user loses rights at once. Logging out invalidates every
    session of that user issued before (remembered in memory until the gateway restarts).
    """

    def __init__(self, secret: str, hours: float) -> None:
        self._secret = secret
        self.max_age_days = hours / 24
        self._not_before: dict[str, float] = {}

    def encode(self, user: str) -> bytes:
        payload = json.dumps({"u": user, "t": time.time(), "n": secrets.token_hex(4)})
        return tornado.web.create_signed_value(self._secret, SESSION_COOKIE, payload)

    def decode(self, value: str | None) -> str | None:
        """The user name of a valid, unexpired, not logged-out session cookie, else None."""
        raw = tornado.web.decode_signed_value(self._secret, SESSION_COOKIE, value, max_age_days=self.max_age_days)
        if raw is None:
            return None
        try:
            payload = json.loads(raw)
            user, issued = str(payload["u"]), float(payload["t"])
        except (ValueError, KeyError, TypeError):
            return None
        return None if issued < self._not_before.get(user, 0.0) else user

    def logout(self, user: str) -> None:
        self._not_before[user] = time.time()
