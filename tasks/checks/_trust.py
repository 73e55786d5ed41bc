"""Trust anchors a caller may give a TLS check instead of the system store: a CA bundle file on the worker
(``ca_bundle``, confined to ``CHECKGATE_CA_DIRS``) or the PEM text itself (``ca_pem``).

A ``ca_bundle`` is a stranger's string naming a file on the worker, so it is read only when

- it is a normalized absolute path lexically under one of ``CHECKGATE_CA_DIRS`` (comma-separated absolute
  directories; default none, so every path is refused and only ``ca_pem`` and the system store remain).
  The gateway checks this much too (400 naming the field); it never looks at the file system;
- its realpath lies under the realpath of one of those directories, and not under /proc, /dev or /sys
  (a directory configured there is ignored), so a symlink out of the directory is refused;
- walking from that directory one component at a time (``openat`` with O_NOFOLLOW), every component is
  still a directory and the last one a regular file: it is ``lstat``-ed before it is opened, so a FIFO,
  socket or device is never opened, and opened with O_NONBLOCK and ``fstat``-ed, so one swapped in
  meanwhile is neither waited on nor read. Nothing here blocks;
- it holds at most `MAX_CA_BYTES` and at least one PEM certificate.

Every refusal on the worker is the same ``ok: false, reason: bad_ca_bundle, detail: "not an allowed CA
bundle"`` (`REFUSAL`), whatever the cause (missing, not allowed, unreadable, a FIFO, too big, not PEM), so a
caller learns nothing about files it may not read; the worker logs the cause at INFO for its operator.

``ca_pem`` is the caller's own data: the gateway checks its framing cheaply (PEM CERTIFICATE blocks of
base64 DER, `MAX_CA_PEM_CHARS` at most; 400 naming the field), the worker parses it with
``SSLContext.load_verify_locations(cadata=…)`` and says precisely what is wrong with it. With both, both
are trusted. `Anchors` compare by content hash, so TLS contexts are cached by what they trust, never by
a path or an mtime.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import ssl
import stat
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

CA_DIRS_ENV = "CHECKGATE_CA_DIRS"
MAX_CA_BYTES = 1024 * 1024
MAX_CA_PEM_CHARS = 16 * 1024
REFUSAL = "not an allowed CA bundle"
# Never trust anchors: kernel interfaces and devices, whatever the configuration says.
SYSTEM_TREES = ("/proc", "/dev", "/sys")

_BEGIN, _END = "-----BEGIN CERTIFICATE-----", "-----END CERTIFICATE-----"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class CARefused(Exception):  # a refusal, not an error of ours: no Error suffix
    """The trust anchors cannot be used; `detail` is what the caller may be told."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _has_control_or_space(text: str) -> bool:
    return any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text)


def _under(path: str, root: str) -> bool:
    """Whether `path` lies strictly below the directory `root` (both normalized)."""
    return path.startswith(root.rstrip("/") + "/")


def _in_system_tree(path: str) -> bool:
    return any(path == tree or _under(path, tree) for tree in SYSTEM_TREES)


def configured_dirs() -> tuple[str, ...]:
    """``CHECKGATE_CA_DIRS`` as written (normalized); relative entries are ignored."""
    raw = os.environ.get(CA_DIRS_ENV, "")
    return tuple(os.path.normpath(d) for d in (item.strip() for item in raw.split(",")) if os.path.isabs(d))


def check_ca_dirs(raw: str) -> None:
    """Start-up check of a ``CHECKGATE_CA_DIRS`` value: ValueError naming the first entry that is not an
    absolute path outside /proc, /dev and /sys (`configured_dirs` would ignore it silently at run time)."""
    for number, item in enumerate((part.strip() for part in raw.split(",") if part.strip()), 1):
        if not os.path.isabs(item) or _in_system_tree(os.path.normpath(item)):
            raise ValueError(f"entry {number} ({item!r}) is not an absolute directory outside /proc, /dev and /sys")


# --- the gateway's checks (syntax and configuration only: no file system) -------------------------


def ca_bundle_refusal(path: str) -> str | None:
    """Why the gateway refuses `path` as a ``ca_bundle`` without looking at any file, or None."""
    if _has_control_or_space(path) or not os.path.isabs(path) or os.path.normpath(path) != path:
        return "ca_bundle must be a normalized absolute path without whitespace"
    dirs = configured_dirs()
    if not dirs:
        return f"no CA directories are configured ({CA_DIRS_ENV}): send the certificates as ca_pem"
    if not any(_under(path, d) for d in dirs):
        return f"ca_bundle is not under {CA_DIRS_ENV}"
    return None


def validate_ca_bundle(path: str) -> None:
    """Param validator for ``ca_bundle``: `ca_bundle_refusal` as a ValueError."""
    if why := ca_bundle_refusal(path):
        raise ValueError(why)


def validate_ca_pem(text: str) -> None:
    """Param validator for ``ca_pem``: one or more PEM CERTIFICATE blocks of base64 DER, nothing else.

    Cheap enough for the gateway's loop: about 20 µs per certificate, 150 µs for the largest value
    accepted (no X.509 parsing: the worker does that with OpenSSL, ~0.5 ms a certificate)."""
    if not text.isascii():
        raise ValueError("must be PEM text (ASCII)")
    rest, blocks = text.strip(), 0
    while rest:
        if not rest.startswith(_BEGIN):
            raise ValueError(f"must hold only PEM certificates ({_BEGIN} … {_END})")
        end = rest.find(_END)
        if end < 0:
            raise ValueError(f"certificate {blocks + 1} has no {_END} line")
        try:
            der = base64.b64decode("".join(rest[len(_BEGIN) : end].split()), validate=True)
        except binascii.Error:
            raise ValueError(f"certificate {blocks + 1} is not base64") from None
        if not _is_der_sequence(der):
            raise ValueError(f"certificate {blocks + 1} is not a DER certificate")
        blocks += 1
        rest = rest[end + len(_END) :].lstrip()
    if not blocks:
        raise ValueError("holds no certificate")


def _is_der_sequence(der: bytes) -> bool:
    """Whether `der` is exactly one DER SEQUENCE (an X.509 certificate's outer shape)."""
    if len(der) < 2 or der[0] != 0x30:
        return False
    if der[1] < 0x80:
        return 2 + der[1] == len(der)
    size = der[1] & 0x7F
    if not 1 <= size <= 4 or len(der) < 2 + size:
        return False
    return 2 + size + int.from_bytes(der[2 : 2 + size], "big") == len(der)


# --- the worker's reading of a ca_bundle ----------------------------------------------------------


def read_ca_bundle(path: str) -> str:
    """The text of the CA bundle `path` names, under the rules of the module docstring.

    Raises `CARefused` with the uniform `REFUSAL` whatever the reason (logged at INFO)."""
    try:
        return _read(path)
    except CARefused as exc:
        log.info("ca_bundle %r refused: %s", path, exc.detail)
    except OSError as exc:
        log.info("ca_bundle %r refused: %s", path, exc.strerror or exc)
    raise CARefused(REFUSAL)


def _read(path: str) -> str:
    if why := ca_bundle_refusal(path):
        raise CARefused(why)
    real = os.path.realpath(path)
    if _in_system_tree(real):
        raise CARefused(f"resolves to {real}, in a system tree")
    for written in configured_dirs():
        root = os.path.realpath(written)
        if _under(path, written) and _under(real, root) and not _in_system_tree(root):
            break
    else:
        raise CARefused(f"resolves to {real}, outside its {CA_DIRS_ENV} entry")
    fd = _open_beneath(root, os.path.relpath(real, root).split("/"))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CARefused("not a regular file once opened")
        if info.st_size > MAX_CA_BYTES:
            raise CARefused(f"{info.st_size} bytes, more than {MAX_CA_BYTES}")
        chunks, size = [], 0
        while chunk := os.read(fd, MAX_CA_BYTES + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_CA_BYTES:
                raise CARefused(f"more than {MAX_CA_BYTES} bytes")
    finally:
        os.close(fd)
    # PEM is ASCII; bundles may carry non-ASCII comments between the blocks, which OpenSSL skips anyway.
    return b"".join(chunks).decode("ascii", "ignore")


def _open_beneath(root: str, parts: list[str]) -> int:
    """Open ``root/parts…`` following no symlink and opening nothing but directories and a regular file."""
    dir_fd = os.open(root, _DIR_FLAGS)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        if not stat.S_ISREG(os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise CARefused("not a regular file")
        return os.open(parts[-1], _FILE_FLAGS, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


# --- what a context trusts ------------------------------------------------------------------------


def _digest(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("ascii", "ignore")).hexdigest()


@dataclass(frozen=True)
class Anchors:
    """The CA certificates a context trusts instead of the system store; equal when their content is."""

    bundle_sha256: str | None
    pem_sha256: str | None
    bundle: str | None = field(default=None, compare=False, repr=False)
    pem: str | None = field(default=None, compare=False, repr=False)

    def load_into(self, ctx: ssl.SSLContext) -> None:
        """Add the certificates to `ctx`; `CARefused` naming what cannot be loaded."""
        if self.bundle is not None:
            try:
                ctx.load_verify_locations(cadata=self.bundle)
            except (ssl.SSLError, ValueError) as exc:
                log.info("ca_bundle refused: not PEM certificates (%s)", exc)
                raise CARefused(REFUSAL) from None
        if self.pem is not None:
            try:
                ctx.load_verify_locations(cadata=self.pem)
            except (ssl.SSLError, ValueError) as exc:
                raise CARefused(
                    f"ca_pem: cannot load the certificates ({getattr(exc, 'reason', None) or exc})"
                ) from None


def anchors(ca_bundle: str | None, ca_pem: str | None) -> Anchors | None:
    """The trust anchors a check was given (None: the system store); `CARefused` for a bundle it may not
    read."""
    if ca_bundle is None and ca_pem is None:
        return None
    bundle = read_ca_bundle(ca_bundle) if ca_bundle is not None else None
    return Anchors(_digest(bundle), _digest(ca_pem), bundle, ca_pem)
