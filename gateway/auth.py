"""Optional API keys: who may run which checks, and how fast.

Enabled by `CHECKGATE_API_KEYS_FILE`, a TOML file of keys stored as SHA-256 digests (keys are random
32-byte tokens made by `checkgate new-key`, so a fast hash is enough; a leaked file reveals no key):

    [[keys]]
    name = "billing"                     # shown in logs and metrics, never the key
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    checks = ["http", "tls"]             # optional: the check types this key may run (default: all)
    rate = 20                            # optional: sustained requests per second (default: unlimited)
    burst = 40                           # optional: bucket size (default: 2 x rate, at least 1)

A request presents its key as `Authorization: Bearer <key>` or `X-API-Key: <key>`. Without the file,
the gateway is open (bind it to 127.0.0.1, the default).

The rate is a token bucket per key in this process (`TokenBucket`, spent by `ApiKey.take`; the console's
login throttle uses it too), kept as our own code rather than the `limits` package (5.8), for measured
reasons:

- `limits` has no token bucket: its strategies are windows of a whole number of requests per whole
  seconds. ``rate = 20, burst = 40`` would become "40 per 2 s", which after a burst refuses a key for up
  to 2 s where the bucket admits one request every 50 ms, and a fractional rate (0.5/s) has no exact
  window: the documented meaning of `rate` and `burst` would change.
- Its asyncio in-memory storage (`limits.aio.storage.MemoryStorage`) starts a task on the loop to expire
  entries after nearly every hit, and the moving window's expiry runs `asyncio.to_thread`: a thread pool
  behind the gateway's event loop, which this project does not allow.
- Cost per request (`python -m bench.library_cost`, 2-core VM at load average 16, five interleaved
  rounds of 20,000 admitted requests): our `take()` 0.9-1.5 µs (median 1.4); `limits.aio` in memory
  15-35 µs (median 25) with the sliding window counter and 11-21 µs (median 18) with the moving
  window: 13-18x ours, 2-3 % of the gateway's 0.91 ms of CPU per published check.

With several gateway processes (CHECKGATE_PROCESSES) each holds its own buckets, so a key gets up to that
many times its rate; the README says so and advises `rate` ÷ processes. What `limits` would bring is its
Redis storage, shared by every gateway process: if API-key rates must one day hold for the gateway as a
whole, `limits.aio` with ``async+redis://`` and the redis-py
implementation (``implementation="redispy"``, the client the gateway already has) is the way, with the
window semantics above documented as the new meaning; a Redis round trip per request then dominates
the cost either way.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

# What CHECKGATE_API_KEYS_FILE must name, in words (start-up errors).
KEYS_FILE_FORM = "the path of a readable TOML file of [[keys]] entries"


class AuthError(Exception):
    """A refused request: the HTTP status (401, 403 or 429), a reason, and for 429 when to retry."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class TokenBucket:
    """`burst` tokens that come back at `rate` per second (monotonic clock): a burst, then a steady rate.

    Checking and spending are one synchronous call (`take`), so callers that spend a token before an
    `await` and give it back after (`give_back`) cannot let concurrent requests past the limit. Shared by
    API keys and the console's login throttle.
    """

    rate: float
    burst: float
    tokens: float = field(default=-1.0, repr=False)
    refilled: float = field(default_factory=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            self.tokens = self.burst

    def _refill(self, now: float) -> None:
        self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now

    def wait(self, now: float | None = None) -> float:
        """Seconds (float) until a token is there, without spending one (0.0: one is there now)."""
        self._refill(time.monotonic() if now is None else now)
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self, now: float | None = None) -> float:
        """Spend one token: 0.0 when there was one, else the seconds until one is back (nothing spent)."""
        wait = self.wait(now)
        if not wait:
            self.tokens -= 1
        return wait

    def give_back(self) -> None:
        """Return a token taken for something that turned out not to count (never above `burst`)."""
        self.tokens = min(self.burst, self.tokens + 1)

    @property
    def full(self) -> bool:
        """Refilled to `burst` as of its last use: equivalent to a new bucket (safe to forget)."""
        return self.tokens + (time.monotonic() - self.refilled) * self.rate >= self.burst


@dataclass
class ApiKey:
    """One configured key: its digest, what it may run, and its token bucket."""

    name: str
    digest: bytes
    checks: frozenset[str] | None = None
    rate: float | None = None
    burst: float = 0.0
    bucket: TokenBucket | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.rate is not None:
            if not self.burst:
                # At least one request, or a key with a rate below 0.5/s could never be used.
                self.burst = max(1.0, 2 * self.rate)
            self.bucket = TokenBucket(self.rate, self.burst)

    def may_run(self, check_name: str) -> bool:
        """Whether this key may run (and read results of) checks of type `check_name`."""
        return self.checks is None or check_name in self.checks

    def take(self) -> float:
        """Spend one token: 0.0 when the request is allowed, else the seconds (float) until a token is
        back, without spending one. Tokens come back at `rate` per second up to `burst`, on the
        monotonic clock; a key without a rate always gets 0.0."""
        return 0.0 if self.bucket is None else self.bucket.take()


def _entry(path: str | Path, number: int, entry: object) -> ApiKey:
    """The `number`-th ``[[keys]]`` table as an `ApiKey`; `ValueError` naming the file, the entry and the
    option at fault."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name", ""), str):
        raise ValueError(f"{path}: key #{number}: must be a table with a string name")
    name = entry.get("name") or f"key #{number}"
    where = f"{path}: {name}"
    try:
        raw = bytes.fromhex(entry["sha256"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{where}: sha256 must be the 64-hex-digit digest of the key") from None
    if len(raw) != 32:
        raise ValueError(f"{where}: sha256 must be 64 hex digits")
    checks = entry.get("checks")
    if checks is not None and not (isinstance(checks, list) and all(isinstance(c, str) for c in checks)):
        raise ValueError(f"{where}: checks must be a list of check type names")
    rate, burst = entry.get("rate"), entry.get("burst")
    for option, value in (("rate", rate), ("burst", burst)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not value > 0):
            raise ValueError(f"{where}: {option} must be a positive number")
    if burst is not None and (rate is None or burst < 1):
        raise ValueError(f"{where}: burst needs a rate and must be at least 1 (one request)")
    return ApiKey(
        name=name,
        digest=raw,
        checks=frozenset(checks) if checks is not None else None,
        rate=float(rate) if rate is not None else None,
        burst=float(burst or 0),
    )


def digest(key: str) -> bytes:
    """The stored form of a key."""
    return hashlib.sha256(key.encode()).digest()


def new_key() -> tuple[str, str]:
    """A fresh random key and the sha256 hex to put in the keys file."""
    key = secrets.token_urlsafe(32)
    return key, digest(key).hex()


class KeyRing:
    """The configured keys; `authorize` answers who the caller is or raises AuthError."""

    def __init__(self, keys: list[ApiKey]) -> None:
        self.keys = keys

    @classmethod
    def from_file(cls, path: str | Path) -> KeyRing:
        """Load and check the TOML keys file.

        Raises `ValueError` whose message starts with the path: the file cannot be read, is not TOML,
        has no ``[[keys]]`` entry, or an entry (named) has a bad ``sha256``, ``checks`` or ``rate``.
        """
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise ValueError(f"{path}: cannot be read ({exc.strerror or exc})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a TOML file ({exc})") from None
        entries = data.get("keys", [])
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{path}: no [[keys]] entries")
        return cls([_entry(path, number, entry) for number, entry in enumerate(entries, 1)])

    def authorize(self, presented: str | None, check_name: str | None) -> ApiKey:
        """The key presented, if it is configured, may run `check_name` and is within its rate."""
        if not presented:
            raise AuthError(401, "an API key is required (Authorization: Bearer <key>)")
        wanted = digest(presented)
        match = None
        for key in self.keys:  # every digest is compared, in constant time, whatever matches
            if hmac.compare_digest(key.digest, wanted):
                match = key
        if match is None:
            raise AuthError(401, "invalid API key")
        if check_name is not None and not match.may_run(check_name):
            raise AuthError(403, f"this API key may not run {check_name!r} checks")
        wait = match.take()
        if wait:
            raise AuthError(429, "rate limit of this API key exceeded", retry_after=max(1, int(wait + 0.999)))
        return match
