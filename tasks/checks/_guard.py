"""Target safety (the SSRF guard): which hosts and addresses a check may reach, in one place.

Two layers apply one policy:

- the gateway validates parameters (`validate_url`, `validate_host`): scheme, credentials, control
  characters, IDNA, and IP literals however spelled; it does no DNS, because the gateway never blocks;
- the worker calls `address_refusal` on the address it is about to connect to, after its own DNS
  resolution and again for every redirect hop, so neither a DNS answer nor a `Location` header can
  smuggle a connection to a refused address.

The policy comes from the environment (comma-separated lists, read when used):

- ``CHECKGATE_ALLOW_NETWORKS``: when set, only addresses in these networks may be reached;
- ``CHECKGATE_DENY_NETWORKS``: refused on top of the built-in link-local and cloud-metadata ranges;
- ``CHECKGATE_ALLOW_HOSTS`` / ``CHECKGATE_DENY_HOSTS``: host names; ``.example.com`` also matches every
  subdomain.

Among the networks that contain an address, the most specific one (longest prefix) decides and a tie
is a refusal, so ``CHECKGATE_ALLOW_NETWORKS=169.254.10.0/24`` re-opens one link-local subnet while the
metadata address stays closed. Loopback is allowed by default (the unspecified addresses 0.0.0.0/8 and ::,
which also reach the local host, are not: nobody means them as a target).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import idna

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Refused unless allowed more specifically: link-local (where every cloud's metadata service lives), AWS's
# IPv6 metadata address, and the unspecified addresses, which connect to the local host and would otherwise
# slip past an operator's deny of 127.0.0.0/8.
DEFAULT_DENY_NETWORKS = {
    "169.254.0.0/16": "link-local or cloud metadata address",
    "fe80::/10": "link-local address",
    "fd00:ec2::254/128": "cloud metadata address",
    "0.0.0.0/8": "unspecified address (this host)",
    "::/128": "unspecified address (this host)",
}
DEFAULT_DENY_HOSTS = ("metadata.google.internal", "metadata.goog")

_LABEL_RE = re.compile(r"[a-z0-9_-]{1,63}")
# Characters inet_aton accepts in the legacy IPv4 spellings (2852039166, 0xa9fea9fe, 0251.0376.0.1).
_LEGACY_IPV4_RE = re.compile(r"[0-9a-fx.]+", re.IGNORECASE)
# Left as they are when a path is percent-encoded: RFC 3986 reserved and unreserved characters, and "%".
_PATH_SAFE = "/?#[]@!$&'()*+,;=-._~%:"


class PolicyConfigError(RuntimeError):
    """The operator's policy environment is malformed; deliberately not a ValueError (not the caller's fault)."""


@dataclass(frozen=True)
class TargetPolicy:
    """Allow and deny lists for networks and host names (see the module docstring)."""

    allow_networks: tuple[IPNetwork, ...] = ()
    deny_networks: tuple[IPNetwork, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    deny_hosts: tuple[str, ...] = ()

    def address_refusal(self, address: str | IPAddress) -> str | None:
        """Why `address` may not be reached, or None when it may."""
        ip = ipaddress.ip_address(address.split("%", 1)[0]) if isinstance(address, str) else address
        # ::ffff:169.254.169.254 reaches the IPv4 address: judge it as that address too.
        candidates = [ip, ip.ipv4_mapped] if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else [ip]
        for candidate in candidates:
            why = self._network_refusal(candidate)
            if why:
                return why
        return None

    def _network_refusal(self, ip: IPAddress) -> str | None:
        allow = max((n.prefixlen for n in self.allow_networks if ip in n), default=-1)
        deny = [n for n in self.deny_networks if ip in n]
        best_deny = max(deny, key=lambda n: n.prefixlen, default=None)
        if best_deny is not None and best_deny.prefixlen >= allow:
            label = _DEFAULT_LABELS.get(best_deny, "denied network")
            return f"{ip} is refused: {label} ({best_deny})"
        if self.allow_networks and allow < 0:
            return f"{ip} is refused: not in CHECKGATE_ALLOW_NETWORKS"
        return None

    def host_refusal(self, host: str) -> str | None:
        """Why the (normalized, ASCII) host name may not be reached, or None when it may."""
        host = host.rstrip(".").lower()
        if any(_host_matches(host, pattern) for pattern in self.deny_hosts):
            return f"host {host} is refused: denied host name"
        if self.allow_hosts and not any(_host_matches(host, pattern) for pattern in self.allow_hosts):
            return f"host {host} is refused: not in CHECKGATE_ALLOW_HOSTS"
        return None


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("."):
        return host == pattern[1:] or host.endswith(pattern)
    return host == pattern


def _networks(raw: str, variable: str) -> tuple[IPNetwork, ...]:
    try:
        return tuple(ipaddress.ip_network(item, strict=False) for item in _items(raw))
    except ValueError as exc:
        raise PolicyConfigError(f"{variable}: {exc}") from None


def _items(raw: str) -> list[str]:
    return [item.strip().lower() for item in raw.split(",") if item.strip()]


_DEFAULT_LABELS = {ipaddress.ip_network(net): label for net, label in DEFAULT_DENY_NETWORKS.items()}
_DEFAULT_NETWORKS = tuple(_DEFAULT_LABELS)


@functools.lru_cache(maxsize=8)
def _policy_from(allow_nets: str, deny_nets: str, allow_hosts: str, deny_hosts: str) -> TargetPolicy:
    return TargetPolicy(
        allow_networks=_networks(allow_nets, "CHECKGATE_ALLOW_NETWORKS"),
        deny_networks=_DEFAULT_NETWORKS + _networks(deny_nets, "CHECKGATE_DENY_NETWORKS"),
        allow_hosts=tuple(_items(allow_hosts)),
        deny_hosts=DEFAULT_DENY_HOSTS + tuple(_items(deny_hosts)),
    )


def current_policy() -> TargetPolicy:
    """The policy the environment describes now (parsed once per distinct environment)."""
    env = os.environ.get
    return _policy_from(
        env("CHECKGATE_ALLOW_NETWORKS", ""),
        env("CHECKGATE_DENY_NETWORKS", ""),
        env("CHECKGATE_ALLOW_HOSTS", ""),
        env("CHECKGATE_DENY_HOSTS", ""),
    )


# --- host names and IP literals -------------------------------------------------------------------


def _has_control_or_space(text: str) -> bool:
    return any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in text)


def parse_ip(host: str) -> IPAddress | None:
    """`host` as an IP address if it is an IP literal in any spelling inet_aton accepts, else None."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    # getaddrinfo would turn these into addresses too, so the gateway must see through them.
    if _LEGACY_IPV4_RE.fullmatch(host) and any(ch.isdigit() for ch in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def normalize_name(name: str) -> str:
    """The ASCII (IDNA/UTS #46) form of a DNS name; ValueError saying why it is not one."""
    if not name or name == ".":
        raise ValueError("host name is empty")
    if _has_control_or_space(name):
        raise ValueError("host name must not contain whitespace or control characters")
    if not name.isascii():
        try:
            # Maps full-width letters, digits and dots to ASCII, as browsers and resolvers do.
            name = idna.uts46_remap(name, std3_rules=False, transitional=False)
        except idna.IDNAError as exc:
            raise ValueError(f"host name {name!r} cannot be IDNA-encoded ({exc})") from None
    labels = name.rstrip(".").split(".")
    ascii_labels = [_ascii_label(label, name) for label in labels]
    result = ".".join(ascii_labels)
    if len(result) > 253:
        raise ValueError("host name is longer than 253 characters")
    return result


def _ascii_label(label: str, name: str) -> str:
    if label.isascii():
        label = label.lower()
        if not _LABEL_RE.fullmatch(label):
            raise ValueError(f"host name {name!r} has an invalid label {label[:70]!r}")
        return label
    try:
        return idna.alabel(label).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(f"host name {name!r} cannot be IDNA-encoded ({exc})") from None


def normalize_host(host: str) -> str:
    """The canonical ASCII form of a host name or IP literal (brackets optional for IPv6)."""
    if not host:
        raise ValueError("host is empty")
    if _has_control_or_space(host):
        raise ValueError("host must not contain whitespace or control characters")
    if host.startswith("[") and host.endswith("]"):
        ip = parse_ip(host[1:-1])
        if not isinstance(ip, ipaddress.IPv6Address):
            raise ValueError(f"{host!r} is not an IPv6 address")
        return str(ip)
    ip = parse_ip(host)
    if ip is not None:
        return str(ip)
    ascii_host = normalize_name(host)
    ip = parse_ip(ascii_host)  # a full-width "１６９．２５４．１６９．２５４" is an IP literal after mapping
    return str(ip) if ip is not None else ascii_host


def host_refusal(host: str, policy: TargetPolicy | None = None) -> str | None:
    """Why a normalized host may not be reached, judged without DNS (IP literals and names)."""
    policy = policy or current_policy()
    ip = parse_ip(host)
    if ip is not None:
        return policy.address_refusal(ip)
    return policy.host_refusal(host)


def validate_host(host: str) -> None:
    """Param validator: a host name or IP literal the policy does not refuse."""
    why = host_refusal(normalize_host(host))
    if why:
        raise ValueError(why)


def validate_host_syntax(host: str) -> None:
    """Param validator: a host name or IP literal that is only named, never connected to (no policy)."""
    normalize_host(host)


def validate_name(name: str) -> None:
    """Param validator: a DNS name (not a target we connect to, so no policy)."""
    normalize_name(name)


# --- URLs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class URLTarget:
    """An http(s) URL taken apart: ASCII host, explicit port, and the request target to send."""

    scheme: str
    host: str
    port: int
    target: str

    @property
    def default_port(self) -> bool:
        return self.port == (443 if self.scheme == "https" else 80)

    @property
    def netloc(self) -> str:
        """Host (bracketed when IPv6) and port when not the scheme's default: the Host header."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.default_port else f"{host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.netloc}{self.target}"

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host, self.port)


def parse_url(url: str) -> URLTarget:
    """Take an absolute http(s) URL apart; ValueError saying why it is not one we accept."""
    if _has_control_or_space(url):
        # urlsplit silently drops tabs and newlines: refuse before it can.
        raise ValueError("URL must not contain whitespace or control characters")
    if "\\" in url:
        # Browsers read "\" as "/": "http://a\@b/" means different hosts to different parsers.
        raise ValueError("URL must not contain backslashes")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL ({exc}); port must be 1..65535") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"scheme must be http or https, not {scheme or 'none'!r}")
    if "@" in parts.netloc:
        raise ValueError("URL must not contain credentials (user@host)")
    if not parts.hostname:
        raise ValueError("URL has no host")
    if port == 0:
        raise ValueError("port must be 1..65535")
    host = normalize_host(parts.hostname)
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_PATH_SAFE)
    return URLTarget(scheme, host, port or (443 if scheme == "https" else 80), target)


def validate_url(url: str) -> None:
    """Param validator: an http(s) URL whose host the policy does not refuse."""
    why = host_refusal(parse_url(url).host)
    if why:
        raise ValueError(why)
