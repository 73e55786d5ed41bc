"""Optional API keys: who may run which checks, and how fast.

Enabled by `CHECKGATE_API_KEYS_FILE`, a TOML file of keys stored as SHA-256 digests (keys are random
32-byte tokens made by `checkgate new-key`, so a fast hash is enough; a leaked file reveals no key):

    [[keys]]
    name = "billing"                     # shown in logs and metrics, never the key
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    checks = ["http", "tls"]             # optional: the check types this key may run (default: all)
    rate = 20                            # optional: sustained requests per second (default: unlimited)
    burst = 40                           # optional: bucket size (default: 2 x rate)

A request presents its key as `Authorization: Bearer <key>` or `X-API-Key: <key>`. Without the file,
the gateway is open (bind it to 127.0.0.1, the default).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path


class AuthError(Exception):
    """A refused request: the HTTP status (401, 403 or 429), a reason, and for 429 when to retry."""

    def __init__(self, status: int, reason: str, retry_after: int | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.retry_after = retry_after


@dataclass
class ApiKey:
    """One configured key: its digest, what it may run, and its token bucket."""

    name: str
    digest: bytes
    checks: frozenset[str] | None = None
    rate: float | None = None
    burst: float = 0.0
    tokens: float = field(default=0.0, repr=False)
    refilled: float = field(default_factory=time.monotonic, repr=False)

    def __post_init__(self) -> None:
        if self.rate is not None and not self.burst:
            self.burst = 2 * self.rate
        self.tokens = self.burst

    def may_run(self, check_name: str) -> bool:
        """Whether this key may run (and read results of) checks of type `check_name`."""
        return self.checks is None or check_name in self.checks

    def take(self) -> float:
        """Spend one token; return 0 when allowed, else the seconds until a token is back."""
        if self.rate is None:
            return 0.0
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.refilled) * self.rate)
        self.refilled = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


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
        """Load and check the TOML keys file (a bad entry fails the start, naming it)."""
        data = tomllib.loads(Path(path).read_text())
        keys = []
        for i, entry in enumerate(data.get("keys", [])):
            name = entry.get("name") or f"key #{i + 1}"
            try:
                raw = bytes.fromhex(entry["sha256"])
            except (KeyError, ValueError):
                raise ValueError(f"{path}: {name}: sha256 must be the 64-hex-digit digest of the key") from None
            if len(raw) != 32:
                raise ValueError(f"{path}: {name}: sha256 must be 64 hex digits")
            checks = entry.get("checks")
            rate = entry.get("rate")
            if rate is not None and not (isinstance(rate, int | float) and rate > 0):
                raise ValueError(f"{path}: {name}: rate must be a positive number")
            keys.append(
                ApiKey(
                    name=name,
                    digest=raw,
                    checks=frozenset(checks) if checks is not None else None,
                    rate=float(rate) if rate is not None else None,
                    burst=float(entry.get("burst", 0)),
                )
            )
        if not keys:
            raise ValueError(f"{path}: no [[keys]] entries")
        return cls(keys)

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
