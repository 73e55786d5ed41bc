"""Console users: salted password hashes, roles, signed session cookies, login throttling.

Hashes are `scrypt$n$r$p$salt$hash` (or `pbkdf2_sha256$iterations$salt$hash`), salt and hash in
URL-safe base64, made by `python -m gateway.console hash-password`; comparisons are constant-time.

Login throttling (`LoginThrottle`) slows guessing instead of locking accounts: 5 checks per user name and
50 per client address per 300 s as a burst, then one check per 60 s per name (6 s per address), the
slot taken *before* the ~50 ms scrypt hash runs in a thread and in the same synchronous step as the
check, so concurrent requests cannot get more checks than that. A lockout would let any stranger keep the
admin out (behind loopback_only every client is 127.0.0.1); slowing keeps a guesser to the same rate
while the real password gets in at the next slot. Trade-off: a guesser that fires at every slot competes
with the real user for it, so under a sustained attack a login may take a few intervals. A browser that
has logged in as a name before is spared that (OWASP's "device cookies"): it holds a signed device
cookie for the name, and its attempts at that name spend a bucket of their own (same limits), not the
name's or the address's, so a stranger's guesses do not slow a returning user at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import secrets
import time
from collections.abc import Mapping

import tornado.web

from gateway.auth import TokenBucket
from gateway.console.config import UserConfig

ROLE_RANK = {"viewer": 0, "operator": 1, "admin": 2}
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
PBKDF2_ITERATIONS = 600_000
SESSION_COOKIE = "checkgate_console"
# A browser that logged in as a user: its own login throttle for that name (see LoginThrottle).
DEVICE_COOKIE = "checkgate_console_device"
DEVICE_DAYS = 90


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
    """Password checks allowed per user name and per client address: a burst, then a steady rate.

    Per gateway process: with N processes (CHECKGATE_PROCESSES) every figure below is N times larger for
    the gateway as a whole, as are session logouts, which only the answering process records (README,
    Operations console). Holding them gateway-wide would need the result backend's Redis on every login.

    Each key is a token bucket (`gateway.auth.TokenBucket`): `per_name` checks of one user name (from
    any address) and `per_client` checks from one address (so guessing across many names is slowed too)
    per `window` seconds, as a burst of that size refilled one check every `window / per_name` (resp.
    `window / per_client`) seconds. `reserve` checks and spends a token of both keys in one synchronous
    step *before* the password is hashed, so concurrent attempts cannot exceed the limit while the hash
    runs in a thread; a check that succeeds gives its tokens back (`succeeded`): only failures count.

    Over the limit the name is slowed, not locked: 429 with Retry-After until its next token, then one
    check. So after an attack the real password gets in within `window / per_name` seconds (60 s by
    default) of the attack's last attempt, and a guesser gets no more than that same one check per
    interval. This follows OWASP's authentication guidance (throttle, do not lock out, an account a
    stranger can name). The trade-off: while a guesser keeps firing at every slot, the real user
    competes with it for each one (slowed, not locked); the clients are indistinguishable, since the
    console is loopback_only by default and every SSH tunnel is 127.0.0.1.

    Except a browser that has logged in as that name before: the login handler passes the id of its
    device cookie (`Sessions.device_for`), and its attempts spend a bucket of that device alone (the
    `per_name` limits), never the name's or the address's, so a guesser cannot slow it; a stolen device
    cookie gives its thief no access, only the same `per_name` guesses per window.
    """

    # Buckets kept at once: bounds the memory an attacker rotating names or addresses can take.
    MAX_KEYS = 10_000

    def __init__(self, per_name: int = 5, per_client: int = 50, window: float = 300.0) -> None:
        self.limits = {"name": per_name, "client": per_client}
        self.window = window
        self._buckets: dict[tuple[str, str], TokenBucket] = {}

    def _prune(self) -> None:
        # Full buckets are the same as none; past that, the oldest go first.
        for key in [k for k, b in self._buckets.items() if b.full]:
            del self._buckets[key]
        while len(self._buckets) >= self.MAX_KEYS:
            del self._buckets[next(iter(self._buckets))]

    def _keys(self, client: str, name: str, device: str | None) -> tuple[tuple[str, str], ...]:
        # A trusted device spends only its own bucket: nothing a stranger does can empty it.
        return (("device", device),) if device else (("name", name), ("client", client))

    def reserve(self, client: str, name: str, device: str | None = None) -> int:
        """Take a password check for `name` from `client`: 0 when taken (call `succeeded` if the password
        was right), else the whole seconds (>= 1) until one is free, for Retry-After (nothing taken).
        `device`: the id of a valid device cookie issued to `name` (`Sessions.device_for`), if any."""
        now = time.monotonic()
        buckets = [self._bucket(kind, value) for kind, value in self._keys(client, name, device)]
        wait = max(b.wait(now) for b in buckets)
        if wait:
            return math.ceil(wait)
        for bucket in buckets:
            bucket.take(now)
        return 0

    def _bucket(self, kind: str, value: str) -> TokenBucket:
        key = (kind, value)
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.MAX_KEYS:
                self._prune()
            limit = self.limits["client" if kind == "client" else "name"]
            bucket = self._buckets[key] = TokenBucket(rate=limit / self.window, burst=float(limit))
        return bucket

    def succeeded(self, client: str, name: str, device: str | None = None) -> None:
        """The reserved check was the right password: it does not count, and the name (or the device)
        starts afresh (only its owner can do that). The address only gets this check back: one valid
        account behind a shared address must not reset the limit on guessing other names."""
        if device:
            self._buckets.pop(("device", device), None)
            return
        self._buckets.pop(("name", name), None)
        bucket = self._buckets.get(("client", client))
        if bucket is not None:
            bucket.give_back()


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

    def new_device(self, user: str, device: str | None = None) -> bytes:
        """A device cookie value for `user` (keeping the id `device` when the browser had one)."""
        payload = json.dumps({"u": user, "d": device or secrets.token_urlsafe(12)})
        return tornado.web.create_signed_value(self._secret, DEVICE_COOKIE, payload)

    def device_for(self, value: str | None, user: str) -> str | None:
        """The device id of a valid device cookie issued to `user`, else None (not signed by this
        console's secret, older than DEVICE_DAYS, or another user's). Survives logout: it grants no
        access, only its own login throttle."""
        raw = tornado.web.decode_signed_value(self._secret, DEVICE_COOKIE, value, max_age_days=DEVICE_DAYS)
        if raw is None:
            return None
        try:
            payload = json.loads(raw)
            owner, device = str(payload["u"]), str(payload["d"])
        except (ValueError, KeyError, TypeError):
            return None
        return device if owner == user and device else None
