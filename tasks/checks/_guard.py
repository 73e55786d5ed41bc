"""Target policy (the SSRF guard): which hosts, addresses and ports a check may reach, decided here only.

No caller may turn checkgate against its own stack or the host it runs on. Two layers apply one policy:

- the gateway validates parameters (`validate_url`, `validate_host`) without DNS, because it never blocks:
  scheme, credentials, control characters, IDNA, IP literals however spelled, and host names (400 naming
  the field);
- the worker calls `target_refusal` through `_common.resolve` / `_common.connect` (built-in and plugin
  checks alike) with the host, the port and the address it is about to connect or send to, after its own
  DNS resolution and again on every redirect hop, so neither a DNS answer nor a ``Location`` header can
  smuggle a connection to a refused target. That decision is the one that counts (``target_refused``).

The rules, in order:

1. **The deployment's own endpoints** are refused for every check type, whatever the allow lists say
   (`deployment_endpoints`): every broker of the Celery app (each host of a ``;`` failover list, the read
   and write URLs); the result backend (each host of a ``sentinel://`` list); RedBeat's Redis (and its
   sentinels); Flower and Supervisor's console on this host; the gateway (and the console it serves); the
   console's nodes; ``CHECKGATE_PROTECTED_ENDPOINTS``. Beside each broker and Redis, every port of its
   service family (`SERVICE_PORTS`: RabbitMQ's AMQPS, streams, STOMP, MQTT, management, Web-STOMP/MQTT,
   epmd, distribution; Redis's cluster bus and Sentinel, and every port configured for either). Their
   names are resolved on the worker (`ENDPOINTS_TTL`) and judged as (address, port). An endpoint on a
   local address (loopback, 0.0.0.0 or ::, an address of this host) protects its port on every local
   address: whatever it is bound to, the same service usually answers on all of them (Redis on 127.0.0.1
   and ::1, a 0.0.0.0 bind). A deployment host that is not local (the broker on 10.0.0.5) is refused on
   every port, unless ``CHECKGATE_OPEN_DEPLOYMENT_HOSTS`` opens its other ports: otherwise the one
   refused port would point at the broker.
2. **Network rules**, judged on the address and on every IPv4 address it embeds (`address_forms`; refused
   when any form is, each form against the refusals *and* the allow list: embedded forms only add
   refusals; an IPv4-mapped address is judged as its IPv4 address alone, as the kernel connects to
   that): built-in refusals that an operator's allow at least as specific opens (loopback, this host's
   own addresses, unspecified, link-local, multicast); the cloud metadata addresses
   (`METADATA_SERVICES`), which no allow opens; ``CHECKGATE_DENY_NETWORKS``. Among the networks that
   contain an address the most specific decides, and on a tie only an operator's allow over a built-in
   default opens: ``CHECKGATE_ALLOW_NETWORKS=169.254.10.0/24`` re-opens one link-local subnet while the
   metadata address stays closed, ``127.0.0.0/8,::1`` opens loopback. When ``CHECKGATE_ALLOW_NETWORKS``
   is set, only addresses in it may be reached.
3. **Host names**: the metadata names and ``CHECKGATE_DENY_HOSTS`` are refused; when
   ``CHECKGATE_ALLOW_HOSTS`` is set only its names may be reached (``.example.com`` also matches every
   subdomain); ``localhost`` names are judged as the loopback addresses they always mean (RFC 6761).

Every refusal reads the same to the caller (`REFUSED`, at the gateway's pre-check and on the worker), so
that refusals cannot map the deployment; the reason (`refusal_reason`) goes to the log at INFO.

Private networks (10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7) stay allowed: checking internal
services is the point. The environment is read when used; malformed values raise `PolicyConfigError`.
(Files a caller may name, ``ca_bundle``, are `_trust`'s business.)
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import os
import re
import socket
import threading
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import cachetools
import idna
import psutil
from kombu import Connection
from kombu.utils.url import url_to_parts

import tasks.checks._resolver as _resolver

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

log = logging.getLogger(__name__)

_LABEL_RE = re.compile(r"[a-z0-9_-]{1,63}")
# Characters inet_aton accepts in the legacy IPv4 spellings (2852039166, 0xa9fea9fe, 0251.0376.0.1).
_LEGACY_IPV4_RE = re.compile(r"[0-9a-fx.]+", re.IGNORECASE)
# Left as they are when a path is percent-encoded: RFC 3986 reserved and unreserved characters, and "%".
_PATH_SAFE = "/?#[]@!$&'()*+,;=-._~%:"


class PolicyConfigError(RuntimeError):
    """The operator's policy environment is malformed; deliberately not a ValueError (not the caller's fault).

    `variable` names the environment variable at fault; the message starts with it."""

    def __init__(self, variable: str, message: str) -> None:
        super().__init__(f"{variable}: {message}")
        self.variable = variable


def _ip(address: str | IPAddress) -> IPAddress:
    """An address from a socket or a literal, without an IPv6 zone (fe80::1%eth0).

    The zone only says which interface to leave by; kept, it would make ``fd20::2%eth0`` a different key
    from ``fd20::2`` in the sets the policy looks addresses up in (ipaddress compares and hashes it).
    """
    if isinstance(address, str):
        return ipaddress.ip_address(address.split("%", 1)[0])
    if address.version == 6 and address.scope_id is not None:
        return ipaddress.IPv6Address(int(address))
    return address


# --- IPv6 forms that embed an IPv4 address --------------------------------------------------------

_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # RFC 4291 §2.5.5.1 (deprecated, still routed by some stacks)
_IPV4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")  # RFC 4291 §2.5.5.2: a socket connects to the IPv4 address
_IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # SIIT, RFC 2765
_NAT64_WELL_KNOWN = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052
_NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: operators carve /48../96 prefixes from it
_RFC6052_PREFIXES = (48, 56, 64, 96)  # the RFC 6052 prefix lengths a 64:ff9b:1::/48 deployment may use
_THIS_HOST_NETWORK = ipaddress.ip_network("0.0.0.0/8")  # "this network": connecting to 0.0.0.0 reaches this host


def _rfc6052_ipv4(packed: bytes, prefixlen: int) -> ipaddress.IPv4Address | None:
    """The IPv4 address under an RFC 6052 prefix of `prefixlen` bits, or None when the layout cannot apply.

    §2.2: the 32 bits follow the prefix, skipping bits 64..71 (the "u" octet), which like the suffix after
    them must be zero; and a translator forwards nothing to 0.0.0.0/8, so such a reading is no target.
    """
    squeezed = packed[:8] + packed[9:]
    start = prefixlen // 8 if prefixlen <= 64 else prefixlen // 8 - 1
    if packed[8] or any(squeezed[start + 4 :]):
        return None
    ipv4 = ipaddress.IPv4Address(squeezed[start : start + 4])
    return None if ipv4 in _THIS_HOST_NETWORK else ipv4


def _isatap_ipv4(packed: bytes) -> ipaddress.IPv4Address | None:
    # RFC 5214 §6.1: interface identifier 0000:5efe:a.b.c.d (0200:5efe when global), under any /64 prefix.
    if packed[8] & 0xFC == 0 and packed[9] == 0 and packed[10:12] == b"\x5e\xfe":
        return ipaddress.IPv4Address(packed[12:])
    return None


def address_forms(address: str | IPAddress) -> tuple[IPAddress, ...]:
    """`address`, then every IPv4 address it embeds: the forms the policy judges (any refused refuses all).

    IPv4-mapped ``::ffff:a.b.c.d``, IPv4-translated ``::ffff:0:a.b.c.d``, IPv4-compatible ``::a.b.c.d``
    (``::`` and ``::1`` are not), NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48`` (each RFC 6052 layout),
    6to4 ``2002::/16``, Teredo ``2001::/32`` (server and de-XORed client) and ISATAP interface identifiers.
    """
    ip = _ip(address)
    if isinstance(ip, ipaddress.IPv4Address):
        return (ip,)
    packed = ip.packed
    forms: list[IPAddress] = [ip]
    if ip.ipv4_mapped is not None:
        forms.append(ip.ipv4_mapped)
    if ip in _IPV4_TRANSLATED or ip in _NAT64_WELL_KNOWN or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        forms.append(ipaddress.IPv4Address(packed[12:]))
    if ip in _NAT64_LOCAL_USE:
        forms.extend(v4 for plen in _RFC6052_PREFIXES if (v4 := _rfc6052_ipv4(packed, plen)) is not None)
    if ip.sixtofour is not None:
        forms.append(ip.sixtofour)
    if ip.teredo is not None:
        forms.extend(ip.teredo)
    if (isatap := _isatap_ipv4(packed)) is not None:
        forms.append(isatap)
    return tuple(dict.fromkeys(forms))


# --- cloud metadata services ----------------------------------------------------------------------


@dataclass(frozen=True)
class MetadataService:
    """A cloud's instance metadata (or credentials) service: its addresses, its names, where that is documented."""

    provider: str
    addresses: tuple[str, ...]
    names: tuple[str, ...] = ()
    source: str = ""


# Refused whatever the allow lists say (a /32 or /128 is never outdone by a more specific allow, and a tie
# refuses). The whole of 169.254.0.0/16 and fe80::/10 is refused by default on top of these.
METADATA_SERVICES: tuple[MetadataService, ...] = (
    MetadataService(
        "AWS EC2 instance metadata (IMDS)",
        ("169.254.169.254", "fd00:ec2::254"),
        ("instance-data", "instance-data.ec2.internal"),
        "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/instancedata-data-retrieval.html",
    ),
    MetadataService(
        "AWS ECS task metadata and credentials",
        ("169.254.170.2",),
        (),
        "https://docs.aws.amazon.com/AmazonECS/latest/developerguide/task-iam-roles.html",
    ),
    MetadataService(
        "AWS EKS Pod Identity agent",
        ("169.254.170.23", "fd00:ec2::23"),
        (),
        "https://docs.aws.amazon.com/eks/latest/userguide/pod-id-agent-setup.html",
    ),
    MetadataService(
        "Google Cloud metadata server",
        ("169.254.169.254", "fd20:ce::254"),
        ("metadata.google.internal", "metadata.goog"),
        "https://cloud.google.com/compute/docs/metadata/querying-metadata",
    ),
    MetadataService(
        "Azure Instance Metadata Service",
        ("169.254.169.254",),
        (),
        "https://learn.microsoft.com/azure/virtual-machines/instance-metadata-service",
    ),
    MetadataService(
        "Azure WireServer (host agent, also the VNet's DNS: the system resolver may still use it)",
        ("168.63.129.16",),
        (),
        "https://learn.microsoft.com/azure/virtual-network/what-is-ip-address-168-63-129-16",
    ),
    MetadataService(
        "Alibaba Cloud ECS metadata",
        ("100.100.100.200",),
        (),
        "https://www.alibabacloud.com/help/en/ecs/user-guide/view-instance-metadata",
    ),
    MetadataService(
        "Oracle Cloud Infrastructure IMDS, and Oracle Cloud Classic",
        ("169.254.169.254", "192.0.0.192"),
        (),
        "https://docs.oracle.com/en-us/iaas/Content/Compute/Tasks/gettingmetadata.htm",
    ),
    MetadataService(
        "DigitalOcean droplet metadata",
        ("169.254.169.254",),
        (),
        "https://docs.digitalocean.com/reference/api/metadata/",
    ),
    MetadataService(
        "OpenStack Nova metadata (IPv6: fe80::a9fe:a9fe)",
        ("169.254.169.254", "fe80::a9fe:a9fe"),
        (),
        "https://docs.openstack.org/nova/latest/user/metadata.html",
    ),
    MetadataService(
        "Tencent Cloud CVM metadata",
        ("169.254.0.23",),
        ("metadata.tencentyun.com",),
        "https://www.tencentcloud.com/document/product/213/4934",
    ),
    MetadataService(
        "Hetzner Cloud server metadata",
        ("169.254.169.254",),
        (),
        "https://docs.hetzner.cloud/reference/cloud#server-metadata",
    ),
    MetadataService(
        "Scaleway instance metadata",
        ("169.254.42.42", "fd00:42::42"),
        (),
        "https://www.scaleway.com/en/developers/api/instance/user-data",
    ),
    MetadataService(
        "IBM Cloud VPC metadata",
        ("169.254.169.254",),
        ("api.metadata.cloud.ibm.com",),
        "https://cloud.ibm.com/docs/vpc?topic=vpc-imd-about",
    ),
    MetadataService(
        "Akamai (Linode), Vultr, Exoscale, Huawei Cloud metadata",
        ("169.254.169.254",),
        (),
        "https://techdocs.akamai.com/cloud-computing/docs/overview-of-the-metadata-service",
    ),
)
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for s in METADATA_SERVICES for a in s.addresses)
METADATA_NAMES = tuple(sorted({name for s in METADATA_SERVICES for name in s.names}))


# --- this host's addresses ------------------------------------------------------------------------

# Interfaces come and go (DHCP, containers, VPNs): read them again this often (seconds).
HOST_ADDRESSES_TTL = 10.0


@cachetools.cached(cachetools.TTLCache(maxsize=1, ttl=HOST_ADDRESSES_TTL), lock=threading.Lock())
def interface_addresses() -> frozenset[IPAddress]:
    """Every address on this host's interfaces, loopback included (psutil's `net_if_addrs`)."""
    return frozenset(
        _ip(nic.address)
        for nics in psutil.net_if_addrs().values()
        for nic in nics
        if nic.family in (socket.AF_INET, socket.AF_INET6)
    )


def is_local(ip: IPAddress, interfaces: frozenset[IPAddress] | None = None) -> bool:
    """Whether a connection to `ip` reaches this host: loopback, unspecified, or an interface's address."""
    if ip.is_loopback or ip.is_unspecified or ip in _THIS_HOST_NETWORK:
        return True
    return ip in (interface_addresses() if interfaces is None else interfaces)


# --- network and host-name rules ------------------------------------------------------------------

# Refused unless an operator's allow at least as specific opens them. The unspecified addresses connect to
# this host too, so they would otherwise slip past a refusal of 127.0.0.0/8.
DEFAULT_DENY_NETWORKS = {
    "127.0.0.0/8": "loopback address",
    "::1/128": "loopback address",
    "0.0.0.0/8": "unspecified address (this host)",
    "::/128": "unspecified address (this host)",
    "169.254.0.0/16": "link-local address",
    "fe80::/10": "link-local address",
    "224.0.0.0/4": "multicast address",
    "ff00::/8": "multicast address",
    "255.255.255.255/32": "broadcast address",
}
METADATA_LABEL = "cloud metadata address"
HOST_ADDRESS_LABEL = "an address of this host"


@dataclass(frozen=True)
class NetworkRule:
    """A refused network and why; `default` when it is a built-in default an operator's allow may open."""

    network: IPNetwork
    label: str
    default: bool = False


@dataclass(frozen=True)
class TargetPolicy:
    """Network and host-name rules (rules 2 and 3 of the module docstring); no port, no DNS."""

    allow_networks: tuple[IPNetwork, ...] = ()
    deny_rules: tuple[NetworkRule, ...] = ()
    allow_hosts: tuple[str, ...] = ()
    deny_hosts: tuple[str, ...] = ()

    @functools.cached_property
    def _rules_by_version(self) -> dict[int, tuple[NetworkRule, ...]]:
        return {v: tuple(r for r in self.deny_rules if r.network.version == v) for v in (4, 6)}

    @functools.cached_property
    def _allow_by_version(self) -> dict[int, tuple[IPNetwork, ...]]:
        return {v: tuple(n for n in self.allow_networks if n.version == v) for v in (4, 6)}

    def address_refusal(self, address: str | IPAddress) -> str | None:
        """Why `address` may not be reached, or None when it may (the reason is for the operator's log).

        An IPv4-mapped ``::ffff:a.b.c.d`` is judged as ``a.b.c.d`` and nothing else: the kernel connects
        to that IPv4 address. Any other address is judged with every IPv4 address it embeds
        (`address_forms`), each against the refused networks *and* the allow list: the embedded forms
        only ever add refusals. An allow that opens ``127.0.0.0/8`` opens ``64:ff9b::7f00:1`` only when
        an allow opens that IPv6 address too, since that is where the check connects.
        """
        ip = _ip(address)
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        for form in address_forms(ip):
            why = self._network_refusal(form)
            if why is None and self.allow_networks and not any(form in n for n in self._allow_by_version[form.version]):
                why = "not in CHECKGATE_ALLOW_NETWORKS"
            if why:
                return f"{ip} is refused: {why}" if form == ip else f"{ip} is refused: it embeds {form}, {why}"
        return None

    def _network_refusal(self, ip: IPAddress) -> str | None:
        allow = max((n.prefixlen for n in self._allow_by_version[ip.version] if ip in n), default=-1)
        best: NetworkRule | None = None
        for rule in self._rules_by_version[ip.version]:
            if ip not in rule.network:
                continue
            if best is None or rule.network.prefixlen > best.network.prefixlen:
                best = rule
            elif rule.network.prefixlen == best.network.prefixlen and best.default and not rule.default:
                best = rule  # an operator's deny or a metadata address outranks a built-in default
        if best is None:
            return None
        prefixlen = best.network.prefixlen
        if allow > prefixlen or (best.default and allow == prefixlen):
            return None
        return f"{best.label} ({best.network})"

    def host_refusal(self, host: str) -> str | None:
        """Why the (normalized, ASCII) host name may not be reached, or None when it may."""
        host = host.rstrip(".").lower()
        if any(_host_matches(host, pattern) for pattern in self.deny_hosts):
            return f"host {host} is refused: denied host name"
        if self.allow_hosts and not any(_host_matches(host, pattern) for pattern in self.allow_hosts):
            return f"host {host} is refused: not in CHECKGATE_ALLOW_HOSTS"
        if is_localhost_name(host):
            # Always the loopback addresses (RFC 6761 §6.3): refused unless one of them is open.
            whys = [self.address_refusal(loopback) for loopback in ("127.0.0.1", "::1")]
            if all(whys):
                return f"host {host}: {whys[0]}"
        return None


def is_localhost_name(host: str) -> bool:
    """Whether a normalized name is ``localhost`` or under it: always a loopback address (RFC 6761 §6.3)."""
    return host == "localhost" or host.endswith(".localhost")


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("."):
        return host == pattern[1:] or host.endswith(pattern)
    return host == pattern


def _networks(raw: str, variable: str) -> tuple[IPNetwork, ...]:
    try:
        return tuple(_as_ipv4(ipaddress.ip_network(item, strict=False)) for item in _items(raw))
    except ValueError as exc:
        raise PolicyConfigError(variable, str(exc)) from None


def _as_ipv4(network: IPNetwork) -> IPNetwork:
    """An IPv4-mapped network (``::ffff:10.0.0.0/104``) as the IPv4 network it means: mapped addresses are
    judged as IPv4 (`TargetPolicy.address_refusal`), so the operator's rule must be one too."""
    if network.version == 6 and network.prefixlen >= 96 and network.network_address in _IPV4_MAPPED:
        mapped = network.network_address.ipv4_mapped
        return ipaddress.ip_network(f"{mapped}/{network.prefixlen - 96}")
    return network


def _items(raw: str) -> list[str]:
    return [item.strip().lower() for item in raw.split(",") if item.strip()]


DEFAULT_RULES = tuple(NetworkRule(ipaddress.ip_network(n), label, True) for n, label in DEFAULT_DENY_NETWORKS.items())
METADATA_RULES = tuple(
    NetworkRule(ipaddress.ip_network(a), METADATA_LABEL) for a in sorted(METADATA_ADDRESSES, key=str)
)
DEFAULT_DENY_HOSTS = METADATA_NAMES


@functools.lru_cache(maxsize=8)
def _policy_from(
    allow_nets: str, deny_nets: str, allow_hosts: str, deny_hosts: str, own: frozenset[IPAddress]
) -> TargetPolicy:
    own_rules = tuple(NetworkRule(ipaddress.ip_network(a), HOST_ADDRESS_LABEL, True) for a in sorted(own, key=str))
    operator_rules = tuple(NetworkRule(n, "denied network") for n in _networks(deny_nets, "CHECKGATE_DENY_NETWORKS"))
    return TargetPolicy(
        allow_networks=_networks(allow_nets, "CHECKGATE_ALLOW_NETWORKS"),
        deny_rules=DEFAULT_RULES + METADATA_RULES + own_rules + operator_rules,
        allow_hosts=tuple(_items(allow_hosts)),
        deny_hosts=DEFAULT_DENY_HOSTS + tuple(_items(deny_hosts)),
    )


def current_policy() -> TargetPolicy:
    """The policy the environment and this host's interfaces describe now (built once per distinct state)."""
    env = os.environ.get
    return _policy_from(
        env("CHECKGATE_ALLOW_NETWORKS", ""),
        env("CHECKGATE_DENY_NETWORKS", ""),
        env("CHECKGATE_ALLOW_HOSTS", ""),
        env("CHECKGATE_DENY_HOSTS", ""),
        _own_addresses(interface_addresses()),
    )


@functools.lru_cache(maxsize=4)
def _own_addresses(interfaces: frozenset[IPAddress]) -> frozenset[IPAddress]:
    # Loopback addresses have their own rule (127.0.0.0/8, ::1), which CHECKGATE_ALLOW_NETWORKS opens whole.
    return frozenset(a for a in interfaces if not a.is_loopback)


# --- the deployment's own endpoints ---------------------------------------------------------------

# Seconds the table of protected endpoints (their names resolved) is kept before it is built again.
ENDPOINTS_TTL = 30.0
DEFAULT_FLOWER_PORT = 5555
DEFAULT_SUPERVISOR_PORT = 9001
DEFAULT_GATEWAY_BIND = "127.0.0.1"
DEFAULT_GATEWAY_PORT = 8888
# The ports of the deployment's services besides the one a URL names, by service family (each port with what
# listens there). Every host of a family is refused on every port of that family: these, every port its
# URLs name (a Redis on 6380 makes 6380 a Redis port of every Redis host, a sentinel on 26380 a Sentinel
# port), and the port derived from each (`_DERIVED_PORT_OFFSET`). The one documented list.
# RabbitMQ: https://www.rabbitmq.com/docs/networking#ports. Not listed: the CLI tools' 35672-35682, open
# only while a command runs, on the host the command runs on, inside Linux's ephemeral port range.
RABBITMQ_PORTS: dict[int, str] = {
    4369: "epmd (Erlang peer discovery)",
    5672: "AMQP",
    5671: "AMQP over TLS",
    5552: "streams",
    5551: "streams over TLS",
    61613: "STOMP",
    61614: "STOMP over TLS",
    1883: "MQTT",
    8883: "MQTT over TLS",
    15672: "management UI and HTTP API (publishes and reads messages)",
    15671: "management over HTTPS",
    15674: "STOMP over WebSockets",
    15675: "MQTT over WebSockets",
    15692: "Prometheus metrics",
    15691: "Prometheus metrics over TLS",
    25672: "inter-node and CLI tools (Erlang distribution)",
}
# Redis: https://redis.io/docs/latest/operate/oss_and_stack/management/scaling/ (the cluster bus) and
# https://redis.io/docs/latest/operate/oss_and_stack/management/sentinel/ (Sentinel's default port).
REDIS_PORTS: dict[int, str] = {6379: "Redis", 16379: "Redis Cluster bus", 26379: "Redis Sentinel"}
SERVICE_PORTS: dict[str, dict[int, str]] = {"rabbitmq": RABBITMQ_PORTS, "redis": REDIS_PORTS}
# kombu transport names (`Connection.info()["transport"]`) by service family.
_FAMILY_OF_TRANSPORT = {
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "pyamqp": "rabbitmq",
    "librabbitmq": "rabbitmq",
    # The workers' librabbitmq transport (tasks/transport.py): celeryconfig's broker_url carries its scheme
    # or pyamqp:// whenever the URL was a plain amqp://.
    "librabbitmq-celery": "rabbitmq",
    "redis": "redis",
    "rediss": "redis",
    "sentinel": "redis",
}
# A port derived from the one a URL names: RabbitMQ's distribution port is its AMQP port + 20000, a Redis
# Cluster node's bus its client port + 10000 (a sentinel has none).
_DERIVED_PORT_OFFSET = {
    "amqp": 20000,
    "pyamqp": 20000,
    "librabbitmq": 20000,
    "librabbitmq-celery": 20000,
    "redis": 10000,
    "rediss": 10000,
}
# Schemes naming a Unix socket: no TCP or UDP target reaches those.
_SOCKET_SCHEMES = frozenset({"unix", "socket", "redis+socket", "rediss+socket"})
# Environment variables the endpoints come from (besides the Celery app's URLs).
ENDPOINT_VARIABLES = (
    "CHECKGATE_BIND",
    "CHECKGATE_PORT",
    "CHECKGATE_FLOWER_PORT",
    "CHECKGATE_SUPERVISOR_PORT",
    "CHECKGATE_CONSOLE_CONFIG",
    "CHECKGATE_PROTECTED_ENDPOINTS",
    "CHECKGATE_OPEN_DEPLOYMENT_HOSTS",
)
# Stands for every local address of the worker's host.
LOCAL = ""


@dataclass(frozen=True)
class ProtectedEndpoint:
    """A host and port of this deployment: a normalized name, an IP literal, or `LOCAL`; port None = every port.

    `family`: the service family (a key of `SERVICE_PORTS`) when the endpoint came from a URL of one.
    """

    host: str
    port: int | None
    family: str = ""


def url_endpoints(url: str | Sequence[str]) -> list[ProtectedEndpoint]:
    """The endpoints a Celery/kombu URL names: each host of a ``;`` failover (or sentinel) list, default ports
    filled in by kombu's transport; an unknown scheme without a port protects every port of its host.
    (`with_companions` adds the other ports of each service family.)"""
    found: list[ProtectedEndpoint] = []
    for item in [url] if isinstance(url, str) else list(url):
        for alternate in _alternates(item):
            scheme = alternate.partition("://")[0].lower()
            if scheme in _SOCKET_SCHEMES:
                continue
            try:
                info = Connection(alternate).info()
                transport, host, port = info["transport"], info["hostname"], info["port"]
            except (KeyError, ImportError):  # a scheme kombu has no transport for (db+postgresql://…)
                parts = url_to_parts(alternate)
                transport, host, port = scheme, parts.hostname, parts.port
            if not host:
                continue
            host, port, family = (
                normalize_host(host),
                int(port) if port else None,
                _FAMILY_OF_TRANSPORT.get(transport, ""),
            )
            found.append(ProtectedEndpoint(host, port, family))
            derived = port + _DERIVED_PORT_OFFSET[transport] if port and transport in _DERIVED_PORT_OFFSET else None
            if derived is not None and derived < 65536:
                found.append(ProtectedEndpoint(host, derived, family))
    return found


def _alternates(url: str) -> list[str]:
    """Each URL of a ``;`` failover list. kombu refuses a scheme close to one of its own (RedBeat's host-less
    ``redis-sentinel://``) with a KeyError: such a URL is split by hand, never an error of the policy."""
    try:
        return Connection(url).alt or [url]
    except (KeyError, ImportError):
        return [part for part in url.split(";") if part.strip()]


def with_companions(endpoints: Iterable[ProtectedEndpoint]) -> list[ProtectedEndpoint]:
    """`endpoints`, then every host of each service family on every port of that family (`SERVICE_PORTS`)."""
    endpoints = list(endpoints)
    hosts: dict[str, set[str]] = {family: set() for family in SERVICE_PORTS}
    ports: dict[str, set[int]] = {family: set(known) for family, known in SERVICE_PORTS.items()}
    for endpoint in endpoints:
        if endpoint.family in hosts:
            hosts[endpoint.family].add(endpoint.host)
            if endpoint.port is not None:
                ports[endpoint.family].add(endpoint.port)
    extra = [
        ProtectedEndpoint(host, port, family)
        for family in SERVICE_PORTS
        for host in sorted(hosts[family])
        for port in sorted(ports[family])
    ]
    return endpoints + extra


def _port(env: Mapping[str, str], variable: str, default: int) -> int:
    raw = env.get(variable) or str(default)
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise PolicyConfigError(variable, "not a port (1..65535)")
    return int(raw)


def parse_protected_endpoints(raw: str) -> list[ProtectedEndpoint]:
    """``CHECKGATE_PROTECTED_ENDPOINTS``: comma-separated ``host:port``, ``[v6]:port`` or URLs (``redis://h:6380``);
    ``0.0.0.0:port`` means that port on every local address."""
    found: list[ProtectedEndpoint] = []
    for number, item in enumerate((part.strip() for part in raw.split(",") if part.strip()), 1):
        try:
            if "://" in item:
                found.extend(url_endpoints(item))
                continue
            parts = urlsplit(f"//{item}")
            if not parts.hostname or not parts.port:
                raise ValueError("expected host:port, port 1..65535")
            found.append(ProtectedEndpoint(normalize_host(parts.hostname), parts.port))
        except ValueError:
            # The value stays out of the message: a task that fails on it answers the caller with it.
            raise PolicyConfigError(
                "CHECKGATE_PROTECTED_ENDPOINTS", f"item {number} is not host:port or a URL"
            ) from None
    return found


def console_endpoints(path: str) -> list[ProtectedEndpoint]:
    """The Supervisor consoles and health URLs of the nodes the operations console drives (its config file).

    Only the addresses are read here; the console validates the rest. An unreadable file is logged, not fatal:
    the worker may not be given the console's file at all.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
        raw = json.loads(text) if path.endswith(".json") else tomllib.loads(text)
    except (OSError, ValueError) as exc:
        log.warning("target policy: cannot read the console's nodes from %s: %s", path, exc)
        return []
    found = []
    for node in raw.get("nodes", []) if isinstance(raw.get("nodes"), list) else []:
        for key in ("url", "health_url"):
            value = node.get(key) if isinstance(node, dict) else None
            try:
                parts = urlsplit(value) if isinstance(value, str) else None
                if parts and parts.hostname:
                    port = parts.port or (443 if parts.scheme == "https" else 80)
                    found.append(ProtectedEndpoint(normalize_host(parts.hostname), port))
            except ValueError:
                continue  # the console refuses such a file itself
    return found


def deployment_endpoints(urls: Iterable[str | Sequence[str]], env: Mapping[str, str]) -> tuple[ProtectedEndpoint, ...]:
    """Every endpoint of this deployment: from the Celery app's URLs (`celery_urls`) and the environment.

    Flower and Supervisor's console are protected on every local address (supervisord.conf binds them to
    127.0.0.1, an operator may bind them elsewhere); the gateway where ``CHECKGATE_BIND`` puts it.
    """
    found: list[ProtectedEndpoint] = []
    for url in urls:
        if url:
            found.extend(url_endpoints(url))
    found.append(ProtectedEndpoint(LOCAL, _port(env, "CHECKGATE_FLOWER_PORT", DEFAULT_FLOWER_PORT)))
    found.append(ProtectedEndpoint(LOCAL, _port(env, "CHECKGATE_SUPERVISOR_PORT", DEFAULT_SUPERVISOR_PORT)))
    try:
        bind = normalize_host(env.get("CHECKGATE_BIND") or DEFAULT_GATEWAY_BIND)
    except ValueError:
        raise PolicyConfigError("CHECKGATE_BIND", "not a host name or IP address") from None
    found.append(ProtectedEndpoint(bind, _port(env, "CHECKGATE_PORT", DEFAULT_GATEWAY_PORT)))
    if env.get("CHECKGATE_CONSOLE_CONFIG"):
        found.extend(console_endpoints(env["CHECKGATE_CONSOLE_CONFIG"]))
    found.extend(parse_protected_endpoints(env.get("CHECKGATE_PROTECTED_ENDPOINTS", "")))
    return tuple(dict.fromkeys(with_companions(found)))


def parse_open_hosts(raw: str) -> tuple[IPNetwork | str, ...]:
    """``CHECKGATE_OPEN_DEPLOYMENT_HOSTS``: comma-separated networks (CIDR or addresses) and host names of
    deployment hosts whose *other* ports checks may reach (their endpoints and companion ports stay refused)."""
    found: list[IPNetwork | str] = []
    for number, item in enumerate(_items(raw), 1):
        try:
            found.append(_as_ipv4(ipaddress.ip_network(item.strip("[]"), strict=False)))
            continue
        except ValueError:
            pass
        try:
            found.append(normalize_host(item))
        except ValueError:
            raise PolicyConfigError(
                "CHECKGATE_OPEN_DEPLOYMENT_HOSTS", f"item {number} is not a network or host"
            ) from None
    return tuple(found)


@dataclass(frozen=True)
class EndpointTable:
    """The protected endpoints with their names resolved: what `refuses` looks up on every connect.

    `names` and `addresses` hold (host, port) pairs, port None for every port of the host: a deployment
    host that is not local (the broker on 10.0.0.5) is refused whole unless the operator opened it
    (``CHECKGATE_OPEN_DEPLOYMENT_HOSTS``), so that no answer tells which of its ports is the broker.
    `local_ports`: the ports refused on every local address (an endpoint on loopback or on this host).
    """

    names: frozenset[tuple[str, int | None]]
    addresses: frozenset[tuple[IPAddress, int | None]]
    local_ports: frozenset[int | None]
    interfaces: frozenset[IPAddress]

    @classmethod
    def build(
        cls,
        endpoints: Iterable[ProtectedEndpoint],
        lookup: Callable[[str], frozenset[IPAddress]],
        interfaces: frozenset[IPAddress],
        open_hosts: Sequence[IPNetwork | str] = (),
    ) -> EndpointTable:
        names: set[tuple[str, int | None]] = set()
        addresses: set[tuple[IPAddress, int | None]] = set()
        local_ports: set[int | None] = set()
        for endpoint in endpoints:
            if endpoint.host == LOCAL:
                local_ports.add(endpoint.port)
                continue
            literal = parse_ip(endpoint.host)
            ips = (_ip(literal),) if literal is not None else lookup(endpoint.host)
            forms = {form for ip in ips for form in address_forms(ip)}
            remote = {form for form in forms if not is_local(form, interfaces)}
            # Refused whole only when no address of it is local (local ports have their own, opt-in rule).
            whole = remote == forms and not _opened(endpoint.host, ips, open_hosts)
            ports = (endpoint.port, None) if whole else (endpoint.port,)
            if literal is None:
                names.update((endpoint.host, port) for port in ports)
            if remote != forms:
                local_ports.add(endpoint.port)
            # Every form that is not local stays refused on the endpoint's port: the forms only add refusals.
            addresses.update((form, port) for form in remote for port in ports)
        return cls(frozenset(names), frozenset(addresses), frozenset(local_ports), interfaces)

    def refusal(
        self, host: str, port: int, address: str | IPAddress | None = None, *, whole_hosts: bool = True
    ) -> str | None:
        """Why (`host`, `port`) — or (`address`, `port`) once resolved — is refused as part of this
        deployment (for the operator's log), or None when it is not; `whole_hosts=False` judges only the
        endpoints themselves, not every port of their hosts."""
        if (host, port) in self.names:
            return f"{PROTECTED} (by name)"
        if whole_hosts and (host, None) in self.names:
            return f"{DEPLOYMENT_HOST} (by name)"
        local = port in self.local_ports or None in self.local_ports
        if local and is_localhost_name(host):
            return f"{PROTECTED} (on a local address)"
        literal = parse_ip(host)
        for ip in {_ip(a) for a in (address, literal) if a is not None}:
            for form in address_forms(ip):
                if local and is_local(form, self.interfaces):
                    return f"{PROTECTED} (on a local address)"
                if (form, port) in self.addresses:
                    return f"{PROTECTED} ({form})"
                if whole_hosts and (form, None) in self.addresses:
                    return f"{DEPLOYMENT_HOST} ({form})"
        return None

    def refuses(self, host: str, port: int, address: str | IPAddress | None = None) -> bool:
        """Whether (`host`, `port`) — or (`address`, `port`) once resolved — is part of this deployment."""
        return self.refusal(host, port, address) is not None


def _opened(host: str, ips: Iterable[IPAddress], open_hosts: Sequence[IPNetwork | str]) -> bool:
    """Whether the operator opened this deployment host's other ports (``CHECKGATE_OPEN_DEPLOYMENT_HOSTS``)."""
    if host in open_hosts:
        return True
    networks = [item for item in open_hosts if not isinstance(item, str)]
    ips = tuple(ips)
    return bool(ips) and all(any(ip in network for network in networks) for ip in ips)


# Seconds a protected endpoint's name may take to resolve before its last addresses are used instead.
PROTECTED_LOOKUP_TIMEOUT = 2.0
# Last addresses each protected name resolved to: a failed lookup keeps them rather than forget the endpoint.
_LAST_KNOWN: dict[str, frozenset[IPAddress]] = {}


def lookup_protected_name(name: str) -> frozenset[IPAddress]:
    """Every address of a protected endpoint's name (all of them, not only the first a check would use).

    The names are the operator's, looked up once per `ENDPOINTS_TTL` per worker process, but by the check
    that happens to need the table then: the lookup is bounded (`_resolver`, `PROTECTED_LOOKUP_TIMEOUT`
    seconds), so a DNS server that stops answering costs that check seconds, not the resolver's minutes.
    """
    try:
        infos = _resolver.getaddrinfo(name, None, socket.AF_UNSPEC, PROTECTED_LOOKUP_TIMEOUT)
    except OSError as exc:  # TimeoutError and socket.gaierror alike
        log.warning("target policy: cannot resolve protected endpoint %s (%s); using its last addresses", name, exc)
        return _LAST_KNOWN.get(name, frozenset())
    addresses = frozenset(_ip(info[4][0]) for info in infos)
    _LAST_KNOWN[name] = addresses
    return addresses


# Reading them through Celery's settings costs ~50 us, and they do not change while a worker runs.
@cachetools.cached(cachetools.TTLCache(maxsize=1, ttl=ENDPOINTS_TTL), lock=threading.Lock())
def celery_urls() -> tuple[str, ...]:
    """The broker (and its read and write) URLs, the result backend and RedBeat's Redis, as the Celery app
    the worker runs has them (celeryconfig, ``CELERY_BROKER_URL``, ``celery worker -b`` alike)."""
    from tasks.celery import app  # here: the app imports the checks, which import this module

    conf = app.conf
    values = (conf.broker_url, conf.broker_read_url, conf.broker_write_url, conf.result_backend)
    values += (conf.get("redbeat_redis_url"),)
    flat = [item for value in values if value for item in ([value] if isinstance(value, str) else value)]
    # RedBeat behind Sentinel has a host-less "redis-sentinel://" URL and its sentinels in its options.
    options = conf.get("redbeat_redis_options") or {}
    flat += [f"sentinel://{_netloc(host, port)}" for host, port in options.get("sentinels") or ()]
    return tuple(dict.fromkeys(flat))


def _netloc(host: str, port: int | None) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


@cachetools.cached(cachetools.TTLCache(maxsize=4, ttl=ENDPOINTS_TTL), lock=threading.Lock())
def _endpoint_table(
    urls: tuple[str, ...], env: tuple[tuple[str, str], ...], interfaces: frozenset[IPAddress]
) -> EndpointTable:
    env_map = dict(env)
    endpoints = deployment_endpoints(urls, env_map)
    open_hosts = parse_open_hosts(env_map.get("CHECKGATE_OPEN_DEPLOYMENT_HOSTS", ""))
    return EndpointTable.build(endpoints, lookup_protected_name, interfaces, open_hosts)


def check_environment(urls: Iterable[str | Sequence[str]], env: Mapping[str, str] | None = None) -> None:
    """Read every policy variable of `env` (default: os.environ) now, as a process's start-up check, so that
    a value the policy cannot use stops the process instead of failing each check that needs it later.

    `urls`: the Celery app's (`celery_urls`). Resolves no name (the endpoints' lookups come at first use).
    Raises `PolicyConfigError` naming the variable at fault.
    """
    env = os.environ if env is None else env
    _networks(env.get("CHECKGATE_ALLOW_NETWORKS", ""), "CHECKGATE_ALLOW_NETWORKS")
    _networks(env.get("CHECKGATE_DENY_NETWORKS", ""), "CHECKGATE_DENY_NETWORKS")
    deployment_endpoints(urls, env)
    parse_open_hosts(env.get("CHECKGATE_OPEN_DEPLOYMENT_HOSTS", ""))


def deployment_table() -> EndpointTable:
    """The protected endpoints of this deployment now (rebuilt, names resolved again, every `ENDPOINTS_TTL` s)."""
    env = tuple((name, os.environ.get(name, "")) for name in ENDPOINT_VARIABLES)
    return _endpoint_table(celery_urls(), env, interface_addresses())


# --- the decision ---------------------------------------------------------------------------------

# What every caller is told, whatever refused the target: no answer may tell a deployment endpoint from a
# loopback address, a metadata address, an operator's deny rule or a host left off an allow list.
REFUSED = "target refused by policy"
# Reasons, for the operator's log only.
PROTECTED = "a protected endpoint of this deployment"
DEPLOYMENT_HOST = "a host of this deployment (every port; CHECKGATE_OPEN_DEPLOYMENT_HOSTS opens the others)"


def refusal_reason(
    host: str,
    port: int,
    address: str | IPAddress | None = None,
    *,
    operator_chosen: bool = False,
    policy: TargetPolicy | None = None,
    endpoints: EndpointTable | None = None,
) -> str | None:
    """Why a check may not reach `host` on `port` (at `address` once resolved), or None when it may.

    For the operator's log and the tests; a caller is told `REFUSED` only (`target_refusal`). `host` is
    normalized (`normalize_host`). Without `address` only what the name or literal tells is judged, before
    any DNS; with it, the address the check is about to use as well. The deployment's endpoints (and its
    hosts, `EndpointTable`) are refused always; the network and host-name rules too unless
    `operator_chosen` (the host is the operator's, e.g. the system resolver on its own port).
    """
    table = endpoints or deployment_table()
    if why := table.refusal(host, port, address, whole_hosts=not operator_chosen):
        return f"{host} port {port}: {why}"
    if operator_chosen:
        return None
    policy = policy or current_policy()
    literal = parse_ip(host)
    if literal is None and (why := policy.host_refusal(host)):
        return why
    for target in dict.fromkeys(_ip(a) for a in (literal, address) if a is not None):
        if why := policy.address_refusal(target):
            return why
    return None


def target_refusal(
    host: str,
    port: int,
    address: str | IPAddress | None = None,
    *,
    operator_chosen: bool = False,
    policy: TargetPolicy | None = None,
    endpoints: EndpointTable | None = None,
) -> str | None:
    """`REFUSED` when a check may not reach `host` on `port` (at `address` once resolved), else None.

    The same text for every refusal, so that no caller can map the deployment by comparing them; the
    reason (`refusal_reason`) goes to the operator's log. Arguments as `refusal_reason`.
    """
    why = refusal_reason(host, port, address, operator_chosen=operator_chosen, policy=policy, endpoints=endpoints)
    if why is None:
        return None
    log.info("target policy: refused %s port %d%s: %s", host, port, f" at {address}" if address else "", why)
    return REFUSED


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
    """Param validator: a host name or IP literal the policy does not refuse (ValueError `REFUSED` when it
    does, the reason logged)."""
    _refuse_at_gateway(normalize_host(host))


def _refuse_at_gateway(host: str) -> None:
    why = host_refusal(host)
    if why:
        log.info("target policy: refused %s at the gateway: %s", host, why)
        raise ValueError(REFUSED)


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
    """Param validator: an http(s) URL whose host the policy does not refuse (as `validate_host`)."""
    _refuse_at_gateway(parse_url(url).host)
