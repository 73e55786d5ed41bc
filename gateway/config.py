"""Gateway settings, read once from the environment (`CHECKGATE_*`)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_ID_PREFIX_RE = re.compile(r"[A-Za-z0-9._:-]{1,40}")


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    return default if raw in (None, "") else float(raw)


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    return default if raw in (None, "") else int(raw)


@dataclass(frozen=True)
class Settings:
    """Everything the gateway process needs to know that is not in celeryconfig."""

    port: int = 8888
    bind: str = "127.0.0.1"
    # Seconds a publish may wait for the broker's confirm (at most the request's own timeout) before
    # the caller gets a 503; a broker whose connection is down is answered at once, not after this.
    publish_timeout: float = 15.0
    # Requests in flight (published, not yet answered) beyond which new ones get 503 + Retry-After.
    max_inflight: int = 20_000
    # The same, per check type, so one flooded type cannot take every slot.
    max_inflight_per_type: int = 10_000
    # Ready messages in a type's queue beyond which its new requests get 503 + Retry-After.
    max_queue_depth: int = 10_000
    # Seconds a 503 asks the caller to wait before retrying.
    retry_after: int = 2
    # Prefix of every task id this process issues (random when empty); it must be unique per process.
    id_prefix: str = ""
    # TOML file of API keys (see gateway/auth.py); empty: no keys asked.
    api_keys_file: str = ""
    # Seconds a connection may idle between requests; a head, once begun, must be complete within
    # head_timeout and an accepted body within body_timeout (else 408 and close; see gateway/edge.py).
    idle_timeout: float = 75.0
    head_timeout: float = 10.0
    body_timeout: float = 10.0
    debug: bool = False

    def __post_init__(self) -> None:
        if self.id_prefix and not _ID_PREFIX_RE.fullmatch(self.id_prefix):
            raise ValueError("CHECKGATE_ID_PREFIX: 1 to 40 of A-Z a-z 0-9 . _ : -")
        for name in ("idle_timeout", "head_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"CHECKGATE_{name.upper()}: a number of seconds > 0")

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from `CHECKGATE_PORT`, `CHECKGATE_BIND`, `CHECKGATE_MAX_INFLIGHT`, …"""
        return cls(
            port=_int("CHECKGATE_PORT", cls.port),
            bind=os.environ.get("CHECKGATE_BIND") or cls.bind,
            publish_timeout=_float("CHECKGATE_PUBLISH_TIMEOUT", cls.publish_timeout),
            max_inflight=_int("CHECKGATE_MAX_INFLIGHT", cls.max_inflight),
            max_inflight_per_type=_int("CHECKGATE_MAX_INFLIGHT_PER_TYPE", cls.max_inflight_per_type),
            max_queue_depth=_int("CHECKGATE_MAX_QUEUE_DEPTH", cls.max_queue_depth),
            retry_after=_int("CHECKGATE_RETRY_AFTER", cls.retry_after),
            id_prefix=os.environ.get("CHECKGATE_ID_PREFIX", ""),
            api_keys_file=os.environ.get("CHECKGATE_API_KEYS_FILE", ""),
            idle_timeout=_float("CHECKGATE_IDLE_TIMEOUT", cls.idle_timeout),
            head_timeout=_float("CHECKGATE_HEAD_TIMEOUT", cls.head_timeout),
            body_timeout=_float("CHECKGATE_BODY_TIMEOUT", cls.body_timeout),
            debug=os.environ.get("CHECKGATE_DEBUG", "") in ("1", "true", "yes"),
        )
