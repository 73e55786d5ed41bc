"""The target policy on its own (tasks/checks/_guard.py): resolution and verdict, never a connection.

Every address below is only judged. Nothing is sent anywhere, so these tests stay on the machine even when the
guard is broken (metadata and cloud addresses are tested here and nowhere else).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterator
from types import SimpleNamespace

import psutil
import pytest

from tasks.checks import _guard
from tasks.checks._common import Probe, ProbeFailure, resolve
from tasks.checks._guard import (
    DEPLOYMENT_HOST,
    METADATA_ADDRESSES,
    METADATA_NAMES,
    METADATA_SERVICES,
    PROTECTED,
    RABBITMQ_PORTS,
    REDIS_PORTS,
    REFUSED,
    EndpointTable,
    PolicyConfigError,
    TargetPolicy,
    address_forms,
    current_policy,
    deployment_endpoints,
    deployment_table,
    normalize_host,
    parse_open_hosts,
    parse_protected_endpoints,
    parse_url,
    refusal_reason,
    target_refusal,
    validate_host,
    validate_url,
)

POLICY_VARIABLES = (
    "CHECKGATE_ALLOW_NETWORKS",
    "CHECKGATE_DENY_NETWORKS",
    "CHECKGATE_ALLOW_HOSTS",
    "CHECKGATE_DENY_HOSTS",
)


@pytest.fixture
def default_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No operator policy: the test run opens loopback for its targets, these tests judge the defaults."""
    for name in POLICY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# A fake interface set, so the own-address rules are tested the same on every machine.
FAKE_NICS = {
    "lo": [("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)],
    "eth9": [("10.77.0.5", socket.AF_INET), ("fd77::5", socket.AF_INET6), ("fe80::77%eth9", socket.AF_INET6)],
    "docker0": [("172.17.0.1", socket.AF_INET)],
}


@pytest.fixture
def fake_nics(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    nics = {
        name: [SimpleNamespace(family=family, address=address) for address, family in addresses]
        for name, addresses in FAKE_NICS.items()
    }
    monkeypatch.setattr(_guard.psutil, "net_if_addrs", lambda: nics)
    _guard.interface_addresses.cache_clear()
    yield
    _guard.interface_addresses.cache_clear()


# --- host normalization ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("Example.COM.", "example.com"),
        ("bücher.de", "xn--bcher-kva.de"),
        ("ＥＸＡＭＰＬＥ。com", "example.com"),
        ("[::1]", "::1"),
        ("0:0:0:0:0:0:0:1", "::1"),
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("１２７.０.０.１", "127.0.0.1"),
        ("_dmarc.example.com", "_dmarc.example.com"),
        ("1e100.net", "1e100.net"),
        ("cafe", "cafe"),
    ],
)
def test_normalize_host(host: str, expected: str) -> None:
    assert normalize_host(host) == expected


@pytest.mark.parametrize("host", ["", "a b", "a\x00b", "a..b", "-" * 64, "[1.2.3.4]", "💩.example", "a/b"])
def test_normalize_host_refuses(host: str) -> None:
    with pytest.raises(ValueError):
        normalize_host(host)


def test_parse_url() -> None:
    target = parse_url("HTTPS://Bücher.DE/straße?q=ü&x=%20#frag")
    assert (target.scheme, target.host, target.port) == ("https", "xn--bcher-kva.de", 443)
    assert target.target == "/stra%C3%9Fe?q=%C3%BC&x=%20"
    assert target.url == "https://xn--bcher-kva.de/stra%C3%9Fe?q=%C3%BC&x=%20"
    ipv6 = parse_url("http://[::1]:8080")
    assert (ipv6.netloc, ipv6.target, ipv6.url) == ("[::1]:8080", "/", "http://[::1]:8080/")


# --- defaults -------------------------------------------------------------------------------------


def test_default_policy(default_env: pytest.MonkeyPatch, fake_nics: None) -> None:
    policy = current_policy()
    refused = {
        "169.254.169.254": "cloud metadata",
        "169.254.0.1": "link-local",
        "fe80::1": "link-local",
        "fd00:ec2::254": "cloud metadata",
        "0.0.0.0": "unspecified",
        "::": "unspecified",
        "127.0.0.1": "loopback",
        "127.9.9.9": "loopback",
        "::1": "loopback",
        "224.0.0.251": "multicast",
        "ff02::1": "multicast",
        "255.255.255.255": "broadcast",
        "10.77.0.5": "an address of this host",
        "fd77::5": "an address of this host",
        "172.17.0.1": "an address of this host",  # a docker bridge: the host's services, by a private address
    }
    for address, label in refused.items():
        assert label in (policy.address_refusal(address) or ""), address
    # Private networks stay allowed: checking internal services is the point.
    for address in ("10.0.0.1", "10.77.0.6", "172.16.0.1", "192.168.1.1", "100.64.0.1", "fd12::1", "fd00:ec2::253"):
        assert policy.address_refusal(address) is None, address
    for address in ("8.8.8.8", "2001:db8::1"):
        assert policy.address_refusal(address) is None, address
    assert "denied host" in policy.host_refusal("metadata.google.internal.")
    assert "loopback" in policy.host_refusal("localhost")
    assert "loopback" in policy.host_refusal("api.localhost")
    assert policy.host_refusal("example.com") is None


def test_this_machines_own_addresses_are_refused_by_default(default_env: pytest.MonkeyPatch) -> None:
    _guard.interface_addresses.cache_clear()
    policy = current_policy()
    own = [a for a in _guard.interface_addresses() if not a.is_loopback]
    for address in own:
        assert policy.address_refusal(address), address
    # psutil, not /proc: every interface psutil reports is there.
    reported = {
        ipaddress.ip_address(nic.address.split("%")[0])
        for nics in psutil.net_if_addrs().values()
        for nic in nics
        if nic.family in (socket.AF_INET, socket.AF_INET6)
    }
    assert reported == set(_guard.interface_addresses())


# --- opening by CHECKGATE_ALLOW_NETWORKS ----------------------------------------------------------


def test_loopback_is_refused_by_default_and_opened_explicitly(default_env: pytest.MonkeyPatch, fake_nics: None) -> None:
    assert "loopback" in current_policy().address_refusal("127.0.0.1")
    default_env.setenv("CHECKGATE_ALLOW_NETWORKS", "0.0.0.0/0,::/0")  # everything, but nothing explicitly
    assert "loopback" in current_policy().address_refusal("127.0.0.1")
    assert "loopback" in current_policy().address_refusal("::1")
    default_env.setenv("CHECKGATE_ALLOW_NETWORKS", "0.0.0.0/0,::/0,127.0.0.0/8,::1")
    policy = current_policy()
    for address in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1", "10.0.0.1"):
        assert policy.address_refusal(address) is None, address
    assert policy.host_refusal("localhost") is None
    # Opening loopback opens neither the unspecified addresses nor this host's other addresses.
    for address in ("0.0.0.0", "::", "10.77.0.5"):
        assert policy.address_refusal(address), address
    default_env.setenv("CHECKGATE_ALLOW_NETWORKS", "127.0.0.1/32")
    assert current_policy().address_refusal("127.0.0.1") is None
    assert "loopback" in current_policy().address_refusal("127.0.0.2")


def test_own_addresses_are_opened_only_explicitly(default_env: pytest.MonkeyPatch, fake_nics: None) -> None:
    default_env.setenv("CHECKGATE_ALLOW_NETWORKS", "10.0.0.0/8,172.16.0.0/12")
    policy = current_policy()
    assert "an address of this host" in policy.address_refusal("10.77.0.5")
    assert "an address of this host" in policy.address_refusal("172.17.0.1")
    assert policy.address_refusal("10.77.0.6") is None
    default_env.setenv("CHECKGATE_ALLOW_NETWORKS", "10.0.0.0/8,10.77.0.5/32")
    assert current_policy().address_refusal("10.77.0.5") is None


def test_most_specific_network_decides(default_env: pytest.MonkeyPatch, fake_nics: None) -> None:
    default_env.setenv("CHECKGATE_ALLOW_NETWORKS", "169.254.10.0/24,fd00:ec2::254/128,169.254.169.254/32")
    policy = current_policy()
    assert policy.address_refusal("169.254.10.5") is None  # the /24 allow beats the /16 default
    assert "metadata" in policy.address_refusal("169.254.169.254")  # a tie with a metadata address refuses
    assert "metadata" in policy.address_refusal("fd00:ec2::254")
    assert "link-local" in policy.address_refusal("fe80::1")
    assert "not in CHECKGATE_ALLOW_NETWORKS" in policy.address_refusal("10.0.0.1")
    default_env.setenv("CHECKGATE_ALLOW_NETWORKS", "10.0.0.0/8")
    default_env.setenv("CHECKGATE_DENY_NETWORKS", "10.0.0.0/8")
    assert "denied network" in current_policy().address_refusal("10.1.2.3")  # an operator's tie refuses


def test_host_lists() -> None:
    policy = TargetPolicy(allow_hosts=(".example.com", "exact.test"), deny_hosts=("bad.example.com",))
    assert policy.host_refusal("a.b.example.com") is None
    assert policy.host_refusal("example.com") is None
    assert policy.host_refusal("exact.test") is None
    assert "denied" in policy.host_refusal("bad.example.com")
    assert "not in CHECKGATE_ALLOW_HOSTS" in policy.host_refusal("sub.exact.test")
    assert "not in CHECKGATE_ALLOW_HOSTS" in policy.host_refusal("notexample.com")


def test_malformed_environment_is_an_operator_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECKGATE_DENY_NETWORKS", "10.0.0.0/8,not-a-network")
    with pytest.raises(PolicyConfigError, match="CHECKGATE_DENY_NETWORKS"):
        current_policy()


# --- IPv6 forms that embed an IPv4 address --------------------------------------------------------


def nat64(prefix: str, prefixlen: int, ipv4: str) -> str:
    """`ipv4` embedded under an RFC 6052 prefix: the octets after the prefix, skipping byte 8 (the "u" octet)."""
    address = bytearray(ipaddress.IPv6Address(prefix).packed[: prefixlen // 8].ljust(16, b"\0"))
    positions = [i for i in range(prefixlen // 8, 16) if i != 8][:4]
    for position, octet in zip(positions, ipaddress.IPv4Address(ipv4).packed, strict=True):
        address[position] = octet
    return str(ipaddress.IPv6Address(bytes(address)))


def teredo_client(ipv4: str) -> str:
    """A Teredo address whose client part is `ipv4` (stored XOR-ed with ones), server 65.54.227.120."""
    obscured = int(ipaddress.IPv4Address(ipv4)) ^ 0xFFFFFFFF
    return str(ipaddress.IPv6Address((0x20010000 << 96) | (0x4136E378 << 64) | (0x800063BF << 32) | obscured))


def embedded_forms(ipv4: str) -> dict[str, str]:
    """Every IPv6 spelling of `ipv4` the policy knows, by name."""
    hexed = ipaddress.IPv4Address(ipv4).packed.hex()
    h1, h2 = hexed[:4], hexed[4:]
    forms = {
        "mapped": f"::ffff:{ipv4}",
        "translated": f"::ffff:0:{h1}:{h2}",
        "compatible": f"::{h1}:{h2}",
        "nat64": f"64:ff9b::{h1}:{h2}",
        "6to4": f"2002:{h1}:{h2}::1",
        "teredo-server": f"2001:0:{h1}:{h2}::1",
        "teredo-client": teredo_client(ipv4),
        "isatap": f"2001:db8::5efe:{h1}:{h2}",
        "isatap-global": f"2001:db8::200:5efe:{h1}:{h2}",
    }
    for prefixlen in (48, 56, 64, 96):
        forms[f"nat64-local-/{prefixlen}"] = nat64("64:ff9b:1::", prefixlen, ipv4)
    return forms


METADATA_FORMS = embedded_forms("169.254.169.254")


@pytest.mark.parametrize("form", sorted(METADATA_FORMS))
def test_embedded_ipv4_forms_are_judged_as_ipv4(form: str, default_env: pytest.MonkeyPatch) -> None:
    address = METADATA_FORMS[form]
    assert ipaddress.IPv4Address("169.254.169.254") in address_forms(address)
    why = current_policy().address_refusal(address)
    assert why and "metadata" in why
    assert "embeds 169.254.169.254" in why or form == "mapped"  # a mapped address *is* the IPv4 one
    # The gateway's DNS-free pre-check, and the worker's decision after resolution, refuse it alike.
    with pytest.raises(ValueError, match=REFUSED):
        validate_url(f"http://[{address}]/latest/meta-data/")
    assert "metadata" in refusal_reason("meta.example", 80, address, endpoints=EMPTY_TABLE)
    assert target_refusal("meta.example", 80, address, endpoints=EMPTY_TABLE) == REFUSED


@pytest.mark.parametrize("form", sorted(METADATA_FORMS))
def test_embedded_loopback_is_loopback(form: str, default_env: pytest.MonkeyPatch, fake_nics: None) -> None:
    address = embedded_forms("127.0.0.1")[form]
    assert "loopback" in current_policy().address_refusal(address)
    default_env.setenv("CHECKGATE_ALLOW_NETWORKS", "0.0.0.0/0,::/0,127.0.0.0/8,::1")
    assert current_policy().address_refusal(address) is None  # the IPv4 form is opened, so is the address


def test_embedded_private_addresses_stay_allowed(default_env: pytest.MonkeyPatch) -> None:
    for form, address in embedded_forms("10.1.2.3").items():
        assert current_policy().address_refusal(address) is None, form


LOOPBACK_FORMS = {form: address for form, address in embedded_forms("127.0.0.1").items() if form != "mapped"}


@pytest.mark.parametrize("form", sorted(LOOPBACK_FORMS))
def test_an_allowed_ipv4_network_opens_no_ipv6_address_that_embeds_it(
    form: str, default_env: pytest.MonkeyPatch, fake_nics: None
) -> None:
    """F8: the embedded forms only add refusals. Opening 127.0.0.0/8 opens the loopback addresses, not the
    IPv6 addresses that embed them (a check connects to those), unless an allow opens them too."""
    address = LOOPBACK_FORMS[form]
    default_env.setenv("CHECKGATE_ALLOW_NETWORKS", "127.0.0.0/8")
    assert "not in CHECKGATE_ALLOW_NETWORKS" in current_policy().address_refusal(address)
    assert target_refusal(address, 22, endpoints=EMPTY_TABLE) == REFUSED
    assert target_refusal("name.example", 22, address, endpoints=EMPTY_TABLE) == REFUSED
    with pytest.raises(ValueError, match=REFUSED):
        validate_host(address)
    # Both opened: the address itself and every IPv4 address it embeds (Teredo's server, NAT64's layouts).
    default_env.setenv("CHECKGATE_ALLOW_NETWORKS", f"0.0.0.0/0,127.0.0.0/8,{address}/128")
    assert current_policy().address_refusal(address) is None
    # The IPv6 network alone is not enough either: the IPv4 address it embeds stays refused.
    default_env.setenv("CHECKGATE_ALLOW_NETWORKS", f"0.0.0.0/0,{address}/128")
    assert "loopback" in current_policy().address_refusal(address)


def test_embedded_forms_only_add_refusals_under_an_allow_list(default_env: pytest.MonkeyPatch) -> None:
    default_env.setenv("CHECKGATE_ALLOW_NETWORKS", "10.0.0.0/8")
    policy = current_policy()
    assert policy.address_refusal("10.1.2.3") is None
    assert policy.address_refusal("::ffff:10.1.2.3") is None  # mapped: the IPv4 address itself
    for address in ("64:ff9b::a01:203", "2002:a01:203::1", "::a01:203", nat64("64:ff9b:1::", 48, "10.1.2.3")):
        assert "not in CHECKGATE_ALLOW_NETWORKS" in policy.address_refusal(address), address
    # The other way: an allowed NAT64 or 6to4 network reaches only the IPv4 addresses the list allows.
    default_env.setenv("CHECKGATE_ALLOW_NETWORKS", "10.0.0.0/8,64:ff9b::/96,2002::/16")
    policy = current_policy()
    assert policy.address_refusal("64:ff9b::a01:203") is None
    assert policy.address_refusal("2002:a01:203::1") is None
    assert "embeds 8.8.8.8" in policy.address_refusal("64:ff9b::808:808")
    assert "embeds 8.8.8.8" in policy.address_refusal("2002:808:808::1")


def test_an_ipv4_mapped_address_is_judged_as_its_ipv4_address_both_ways(default_env: pytest.MonkeyPatch) -> None:
    """F8: ::ffff:a.b.c.d is a connection to a.b.c.d: an IPv6 allow (::/0) does not open it, and the operator's
    rules written either way apply to both spellings."""
    default_env.setenv("CHECKGATE_ALLOW_NETWORKS", "::/0,10.0.0.0/8")
    policy = current_policy()
    assert "not in CHECKGATE_ALLOW_NETWORKS" in policy.address_refusal("::ffff:192.0.2.1")
    assert policy.address_refusal("::ffff:10.1.2.3") is None
    default_env.setenv("CHECKGATE_ALLOW_NETWORKS", "::ffff:10.0.0.0/104")  # the mapped spelling of 10.0.0.0/8
    policy = current_policy()
    assert policy.address_refusal("10.1.2.3") is None
    assert policy.address_refusal("::ffff:10.1.2.3") is None
    assert policy.address_refusal("192.0.2.1")
    default_env.delenv("CHECKGATE_ALLOW_NETWORKS")
    default_env.setenv("CHECKGATE_DENY_NETWORKS", "::ffff:10.9.0.0/112")
    policy = current_policy()
    assert "denied network" in policy.address_refusal("10.9.1.1")
    assert "denied network" in policy.address_refusal("::ffff:10.9.1.1")
    assert policy.address_refusal("10.8.1.1") is None


def test_a_zone_id_changes_no_verdict(default_env: pytest.MonkeyPatch, fake_nics: None) -> None:
    """An IPv6 zone (fe80::1%eth0, fd20::2%eth0) names an interface, not another address: the verdicts on
    the bare address hold before any DNS, for the deployment's endpoints and this host's own addresses."""
    t = table(("redis://127.0.0.1:6379/0",), CHECKGATE_OPEN_DEPLOYMENT_HOSTS=OPEN_ALL)
    assert refused(t, "fd77::5%eth9", 6379)  # an address of this host, scoped: a local endpoint's port
    t = table(CHECKGATE_OPEN_DEPLOYMENT_HOSTS=OPEN_ALL)
    assert refused(t, "fd20::2%eth0", 5672)  # the failover broker, scoped
    assert refused(t, "::ffff:a14:2%eth0", 5672)
    assert not refused(t, "fd20::2%eth0", 22)
    assert "metadata" in current_policy().address_refusal(ipaddress.ip_address("fe80::a9fe:a9fe%eth0"))
    assert normalize_host("[fe80::a9fe:a9fe%eth0]") == "fe80::a9fe:a9fe%eth0"
    assert target_refusal("fe80::a9fe:a9fe%eth0", 80, endpoints=EMPTY_TABLE) == REFUSED
    for scoped in ("fe80::1%lo", "fe80::77%eth9", "::1%lo", "ff02::1%eth9"):
        assert target_refusal(normalize_host(scoped), 22, endpoints=EMPTY_TABLE) == REFUSED, scoped


def test_loopback_and_unspecified_are_no_ipv4_compatible_forms() -> None:
    assert address_forms("::1") == (ipaddress.IPv6Address("::1"),)
    assert address_forms("::") == (ipaddress.IPv6Address("::"),)
    assert address_forms("2001:db8::1") == (ipaddress.IPv6Address("2001:db8::1"),)


# --- cloud metadata -------------------------------------------------------------------------------


def test_metadata_list_has_the_documented_endpoints() -> None:
    expected = {
        "169.254.169.254",  # AWS, GCP, Azure, Oracle, DigitalOcean, OpenStack, Hetzner…
        "fd00:ec2::254",  # AWS IPv6
        "169.254.170.2",  # AWS ECS task metadata
        "168.63.129.16",  # Azure WireServer
        "100.100.100.200",  # Alibaba
        "192.0.0.192",  # Oracle
        "169.254.0.23",  # Tencent
    }
    assert {ipaddress.ip_address(a) for a in expected} <= METADATA_ADDRESSES
    assert {"metadata.google.internal", "metadata.tencentyun.com"} <= set(METADATA_NAMES)
    assert all(service.source.startswith("https://") for service in METADATA_SERVICES)


@pytest.mark.parametrize("address", sorted(map(str, METADATA_ADDRESSES)))
def test_every_metadata_address_is_refused_whatever_is_allowed(address: str, default_env: pytest.MonkeyPatch) -> None:
    assert "metadata" in current_policy().address_refusal(address)
    with pytest.raises(ValueError, match=REFUSED):
        validate_url(f"http://[{address}]/" if ":" in address else f"http://{address}/")
    host = f"{address}/{128 if ':' in address else 32}"
    default_env.setenv("CHECKGATE_ALLOW_NETWORKS", f"0.0.0.0/0,::/0,169.254.0.0/16,fe80::/10,{host}")
    assert "metadata" in current_policy().address_refusal(address)
    if ":" not in address:
        for form, spelled in embedded_forms(address).items():
            assert "metadata" in (current_policy().address_refusal(spelled) or ""), form


@pytest.mark.parametrize("name", METADATA_NAMES)
def test_every_metadata_name_is_refused(name: str, default_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=REFUSED):
        validate_url(f"http://{name}/")
    assert "denied host" in refusal_reason(name, 80, endpoints=EMPTY_TABLE)


# --- the deployment's own endpoints ---------------------------------------------------------------

EMPTY_TABLE = EndpointTable(frozenset(), frozenset(), frozenset(), frozenset())
INTERFACES = frozenset(ipaddress.ip_address(a) for a in ("127.0.0.1", "::1", "10.77.0.5", "fd77::5"))
NAMES = {
    "rabbit-a.internal": ["10.20.0.1"],
    "rabbit-b.internal": ["10.20.0.2", "fd20::2"],
    "s1.internal": ["10.30.0.1"],
    "redis.internal": ["10.40.0.1"],
    "cache.internal": ["10.50.0.1"],
    "pg.internal": ["10.60.0.1"],
    "localhost": ["127.0.0.1", "::1"],
    "node-a.internal": ["10.80.0.1"],
}
URLS = (
    "amqp://user:secret@rabbit-a.internal:5672//;amqp://rabbit-b.internal//;amqps://10.20.0.3//",
    "sentinel://:pw@s1.internal:26379;sentinel://10.30.0.2:26380/0",
    "rediss://:pw@redis.internal/0",
    "redis+socket:///run/redis/redis.sock",
)


def table(urls: tuple = URLS, **env: str) -> EndpointTable:
    """The endpoint table of a fictitious deployment, names resolved from `NAMES` (no DNS)."""
    lookup = lambda name: frozenset(ipaddress.ip_address(a) for a in NAMES.get(name, ()))  # noqa: E731
    open_hosts = parse_open_hosts(env.get("CHECKGATE_OPEN_DEPLOYMENT_HOSTS", ""))
    return EndpointTable.build(deployment_endpoints(urls, env), lookup, INTERFACES, open_hosts)


# Every deployment host of `NAMES` opened: their other ports are checks like any other, endpoints excepted.
OPEN_ALL = "10.0.0.0/8,fd00::/8"


def refused(endpoints: EndpointTable, host: str, port: int, address: str | None = None) -> bool:
    """Whether the deployment's endpoints refuse it (as an endpoint or as a port of a deployment host)."""
    why = refusal_reason(host, port, address, endpoints=endpoints, policy=TargetPolicy())
    assert (why is None) == (target_refusal(host, port, address, endpoints=endpoints, policy=TargetPolicy()) is None)
    return why is not None and (PROTECTED in why or DEPLOYMENT_HOST in why)


def test_every_broker_and_backend_endpoint_by_name_and_by_address() -> None:
    t = table(CHECKGATE_OPEN_DEPLOYMENT_HOSTS=f"{OPEN_ALL},rabbit-a.internal")
    # By name, before any lookup (the caller's DNS cannot matter), and by every address the name has.
    assert refused(t, "rabbit-a.internal", 5672)
    assert refused(t, "other.example", 5672, "10.20.0.1")
    assert refused(t, "other.example", 5672, "10.20.0.2")  # the failover broker, default port filled in
    assert refused(t, "other.example", 5672, "fd20::2")
    assert refused(t, "other.example", 5672, "::ffff:10.20.0.2")  # an embedded form of it
    assert refused(t, "10.20.0.3", 5671)  # amqps' default port
    for port in (4369, 25672, 15672, 15671, 15692):  # epmd, distribution, management API, Prometheus
        assert refused(t, "10.20.0.1", port), port
    assert refused(t, "s1.internal", 26379)  # each sentinel of the list
    assert refused(t, "10.30.0.2", 26380)
    assert refused(t, "other.example", 6379, "10.40.0.1")  # rediss:// without a port: 6379
    # Other ports of the same hosts, and other hosts on the same ports, are checks like any other.
    assert not refused(t, "10.20.0.1", 22)
    assert not refused(t, "10.20.0.9", 5672)
    assert not refused(t, "10.40.0.1", 6380)
    assert not refused(t, "rabbit-a.internal", 443)


def test_companion_ports_of_every_service_family() -> None:
    """F11: each host of the broker's failover list and of the sentinel list, and the Redis, on every port its
    service family listens on (`RABBITMQ_PORTS`, `REDIS_PORTS`, the configured ports and their offsets)."""
    t = table(CHECKGATE_OPEN_DEPLOYMENT_HOSTS=OPEN_ALL)  # hosts opened: only the family's ports stay refused
    companions = {5671, 5552, 61613, 1883, 15672, 15674, 15675, 4369, 25672}  # the review's list
    assert companions <= set(RABBITMQ_PORTS)
    for host in ("10.20.0.1", "10.20.0.2", "fd20::2", "10.20.0.3", "rabbit-b.internal"):
        for port in sorted(RABBITMQ_PORTS):
            assert refused(t, host, port), (host, port)
    for host in ("10.30.0.1", "10.30.0.2", "s1.internal", "10.40.0.1", "redis.internal"):
        # Redis, its cluster bus, Sentinel, the other configured sentinel port (26380) and their buses.
        for port in (*REDIS_PORTS, 26380, 16379):
            assert refused(t, host, port), (host, port)
    assert not refused(t, "10.30.0.2", 36380)  # a sentinel has no cluster bus
    assert not refused(t, "10.40.0.1", 15672)  # families stay apart
    assert not refused(t, "10.20.0.1", 6379)
    # A broker on a port of its own: its distribution port (AMQP + 20000) too.
    t = table(("amqp://rabbit-a.internal:5673//",), CHECKGATE_OPEN_DEPLOYMENT_HOSTS=OPEN_ALL)
    assert refused(t, "10.20.0.1", 5673) and refused(t, "10.20.0.1", 25673) and refused(t, "10.20.0.1", 5552)


def test_companion_ports_on_every_local_address() -> None:
    t = table(("redis://127.0.0.1:6380/0", "amqp://localhost//"))
    for address in ("127.0.0.1", "::1", "10.77.0.5", "::ffff:127.0.0.1"):
        for port in (5671, 5552, 61613, 1883, 15672, 15674, 15675, 4369, 25672, 6380, 16380, 6379, 16379, 26379):
            assert refused(t, address, port), (address, port)
    assert not refused(t, "127.0.0.1", 8080)
    t = table((), CHECKGATE_PROTECTED_ENDPOINTS="redis://127.0.0.1:6390")  # the operator's URLs alike
    assert refused(t, "::1", 16390) and refused(t, "::1", 26379)


def test_redbeats_sentinels_are_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    """CHECKGATE_BEAT_REDIS_URL=sentinel://…: RedBeat's URL has no host, its sentinels are in its options."""
    from tasks.celery import app

    monkeypatch.setitem(app.conf, "redbeat_redis_url", "redis-sentinel://")
    monkeypatch.setitem(app.conf, "redbeat_redis_options", {"sentinels": [("s9.internal", 26381), ("fd90::9", 26382)]})
    _guard.celery_urls.cache_clear()
    try:
        urls = _guard.celery_urls()
    finally:
        _guard.celery_urls.cache_clear()
    assert {"sentinel://s9.internal:26381", "sentinel://[fd90::9]:26382"} <= set(urls)
    NAMES["s9.internal"] = ["10.90.0.9"]
    try:
        t = table(urls, CHECKGATE_OPEN_DEPLOYMENT_HOSTS=OPEN_ALL)
    finally:
        del NAMES["s9.internal"]
    assert refused(t, "10.90.0.9", 26381) and refused(t, "fd90::9", 26382) and refused(t, "fd90::9", 6379)


def test_a_deployment_host_off_this_host_is_refused_on_every_port() -> None:
    """F12: the broker at 10.20.0.1 makes 10.20.0.1 refused whole — by name, by address, in every spelling,
    dns servers included — so that no answer tells which of its ports is the broker."""
    t = table()
    for host, port, address in (
        ("10.20.0.1", 22, None),
        ("rabbit-a.internal", 443, None),
        ("RABBIT-A.Internal.", 443, None),
        ("x.example", 80, "10.20.0.2"),
        ("x.example", 53, "fd20::2"),  # the dns check's server= names a target like any other
        ("10.40.0.1", 6380, None),
        ("s1.internal", 22, None),
        ("::ffff:10.30.0.2", 1, None),
        ("64:ff9b::a14:3", 22, None),
    ):
        assert refused(t, normalize_host(host), port, address), (host, port, address)
        assert DEPLOYMENT_HOST in refusal_reason(normalize_host(host), port, address, endpoints=t)
    assert not refused(t, "10.20.0.9", 22)  # the next address is a target like any other
    # Local endpoints stay per port: loopback and this host's addresses have their own (opt-in) rule.
    t = table(("redis://127.0.0.1:6379/0",))
    assert refused(t, "127.0.0.1", 6379) and not refused(t, "127.0.0.1", 22)


def test_the_operator_opens_a_deployment_hosts_other_ports() -> None:
    t = table(CHECKGATE_OPEN_DEPLOYMENT_HOSTS="10.20.0.0/16,fd20::/16, redis.internal")
    for host, port in (("10.20.0.1", 22), ("rabbit-a.internal", 443), ("fd20::2", 80), ("10.40.0.1", 80)):
        assert not refused(t, host, port), (host, port)
    for host, port in (("10.20.0.1", 5672), ("10.20.0.1", 15672), ("10.40.0.1", 6379), ("10.40.0.1", 16379)):
        assert refused(t, host, port), (host, port)  # the endpoints and their companions stay refused
    assert refused(t, "10.30.0.1", 22)  # the sentinels were not opened
    for bad in ("10.0.0.0/33", "a b", "x_y!"):
        with pytest.raises(PolicyConfigError, match="CHECKGATE_OPEN_DEPLOYMENT_HOSTS"):
            parse_open_hosts(bad)


# Every spelling of the same targets a caller may try: IP literals however written, names in any case, with
# a trailing dot, full-width (IDNA maps them), IPv6 forms of loopback, zone ids, embedded forms.
REMOTE_SPELLINGS = (
    "10.20.0.1",
    "10.20.0.1.",
    "0x0a.0x14.0.1",
    "012.024.0.1",
    "169082881",
    "10.20.1",
    "１０.２０.０.１",
    "[::ffff:10.20.0.1]",
    "::FFFF:A14:1",
    "64:ff9b::a14:1",
    "2002:a14:1::1",
    "RABBIT-A.INTERNAL.",
    "ｒａｂｂｉｔ-ａ.internal",
)
LOCAL_SPELLINGS = (
    "127.0.0.1",
    "127.1",
    "0x7f000001",
    "2130706433",
    "0177.0.0.1",
    "127.0.0.1.",
    "::1",
    "0:0:0:0:0:0:0:1",
    "[::1%lo]",
    "::ffff:127.0.0.1",
    "::127.0.0.1",
    "0",
    "::",
    "LOCALHOST",
    "localhost.",
    "ｌｏｃａｌｈｏｓｔ",
    "api.localhost",
)


@pytest.mark.parametrize(("host", "port"), [(h, 22) for h in REMOTE_SPELLINGS] + [(h, 6379) for h in LOCAL_SPELLINGS])
def test_every_spelling_of_the_deployment_is_refused_before_any_dns(
    host: str, port: int, default_env: pytest.MonkeyPatch, fake_nics: None
) -> None:
    """tcp, tls, http and dns (server=) alike reach a target through resolve(): the broker's host (every port)
    and the local Redis (its port, loopback open as in the tests) in every spelling, refused before a lookup."""
    default_env.setenv("CHECKGATE_ALLOW_NETWORKS", "127.0.0.0/8,::1")
    t = table((*URLS, "redis://127.0.0.1:6379/0"))
    default_env.setattr(_guard, "deployment_table", lambda: t)
    default_env.setattr(_guard.socket, "getaddrinfo", lambda *a, **k: pytest.fail(f"{host} was looked up"))
    with pytest.raises(ProbeFailure) as failure:
        resolve(host, port, Probe(None))
    assert (failure.value.reason, failure.value.detail) == ("target_refused", REFUSED)


def test_the_operators_resolver_is_not_refused_as_a_deployment_host() -> None:
    """The system resolver (operator_chosen) on a deployment host: only the endpoints themselves count."""
    t = table()
    assert target_refusal("10.20.0.1", 53, operator_chosen=True, endpoints=t) is None
    assert target_refusal("10.20.0.1", 5672, operator_chosen=True, endpoints=t) == REFUSED


def test_broker_url_lists_and_unknown_schemes() -> None:
    urls = ("amqp://rabbit-a.internal//", ["amqp://rabbit-b.internal:5673//"], "db+postgresql://u:p@pg.internal/x")
    t = table(urls, CHECKGATE_OPEN_DEPLOYMENT_HOSTS=OPEN_ALL)
    assert refused(t, "10.20.0.1", 5672)
    assert refused(t, "10.20.0.2", 5673)
    assert refused(t, "10.60.0.1", 5432)  # no port and no transport that knows one: every port of the host
    assert refused(t, "10.60.0.1", 1)


def test_every_amqp_transport_scheme_protects_the_brokers_companion_ports() -> None:
    # celeryconfig rewrites amqp:// to pyamqp:// or to the workers' librabbitmq scheme (tasks/transport.py):
    # the broker's epmd, distribution and management ports stay refused under every one of them.
    import tasks.transport  # noqa: F401  (registers librabbitmq-celery:// with kombu, as celeryconfig does)

    for scheme in ("amqp", "pyamqp", "librabbitmq", "librabbitmq-celery"):
        t = table((f"{scheme}://rabbit-a.internal//", "redis://10.40.0.1:6379/0"))
        for port in (5672, 4369, 25672, 15672, 15671, 15692):
            assert refused(t, "10.20.0.1", port), (scheme, port)


def test_local_endpoints_protect_their_port_on_every_local_address() -> None:
    # Configured on 127.0.0.1, Redis also answers on ::1 here; bound to 0.0.0.0, on every address of the host.
    t = table(("redis://127.0.0.1:6379/0", "amqp://localhost//"))
    for address in ("127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1", "0.0.0.0", "::", "10.77.0.5", "fd77::5"):
        assert refused(t, address, 6379), address
        assert refused(t, address, 5672), address
        assert refused(t, address, 15672), address
    assert refused(t, "localhost", 6379)
    assert not refused(t, "10.77.0.6", 6379)  # another host of the same network
    assert not refused(t, "127.0.0.1", 6380)


@pytest.mark.parametrize("bind", ["0.0.0.0", "::", "[::]"])
def test_an_endpoint_bound_to_every_address(bind: str) -> None:
    t = table((), CHECKGATE_BIND=bind, CHECKGATE_PORT="8080")
    for address in ("127.0.0.1", "127.3.3.3", "::1", "10.77.0.5", "fd77::5", "0.0.0.0", "::", "::ffff:127.0.0.1"):
        assert refused(t, address, 8080), address
    assert not refused(t, "10.77.0.6", 8080)
    assert not refused(t, "10.77.0.5", 8081)


def test_gateway_flower_and_supervisor_ports_from_the_environment() -> None:
    defaults = table(())
    for port in (8888, 5555, 9001):  # 127.0.0.1:8888, and Flower and Supervisor on this host
        assert refused(defaults, "127.0.0.1", port)
        assert refused(defaults, "::1", port)
    assert refused(defaults, "10.77.0.5", 5555)
    assert refused(defaults, "10.77.0.5", 8888)  # on 127.0.0.1: its port on every local address
    assert not refused(defaults, "10.77.0.6", 8888)
    t = table((), CHECKGATE_PORT="18888", CHECKGATE_FLOWER_PORT="15555", CHECKGATE_SUPERVISOR_PORT="19001")
    for port in (18888, 15555, 19001):
        assert refused(t, "127.0.0.1", port)
    assert not refused(t, "127.0.0.1", 5555)
    t = table((), CHECKGATE_BIND="10.77.0.9", CHECKGATE_PORT="8888")
    assert refused(t, "10.77.0.9", 8888)
    assert refused(t, "10.77.0.9", 22)  # a gateway on another host: that host whole


def test_operator_list_of_protected_endpoints() -> None:
    protected = "cache.internal:9100, [fd30::7]:8080,redis://node-a.internal:6390"
    t = table((), CHECKGATE_PROTECTED_ENDPOINTS=protected, CHECKGATE_OPEN_DEPLOYMENT_HOSTS=OPEN_ALL)
    assert refused(t, "cache.internal", 9100)
    assert refused(t, "x.example", 9100, "10.50.0.1")
    assert refused(t, "fd30::7", 8080)
    assert refused(t, "10.80.0.1", 6390)
    assert not refused(t, "10.50.0.1", 9101)
    for bad in ("cache.internal", "cache.internal:0", "a b:1", "[::1:80"):
        with pytest.raises(PolicyConfigError, match="CHECKGATE_PROTECTED_ENDPOINTS"):
            parse_protected_endpoints(bad)


def test_console_nodes_are_protected(tmp_path) -> None:
    config = tmp_path / "console.toml"
    config.write_text(
        '[[nodes]]\nname = "a"\nurl = "http://node-a.internal:9001/RPC2"\n'
        'health_url = "https://cache.internal/health"\n[[nodes]]\nname = "b"\nurl = "http://10.90.0.2:9002/RPC2"\n'
    )
    t = table((), CHECKGATE_CONSOLE_CONFIG=str(config))
    assert refused(t, "10.80.0.1", 9001)
    assert refused(t, "cache.internal", 443)
    assert refused(t, "10.90.0.2", 9002)
    assert table((), CHECKGATE_CONSOLE_CONFIG=str(tmp_path / "missing.toml"))  # logged, not fatal


def test_allow_lists_cannot_open_a_deployment_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    """The running deployment's own table (the Celery app's URLs: the tests' RabbitMQ and Redis)."""
    monkeypatch.setenv("CHECKGATE_ALLOW_NETWORKS", "0.0.0.0/0,::/0,127.0.0.0/8,::1/128,127.0.0.1/32")
    monkeypatch.setenv("CHECKGATE_ALLOW_HOSTS", "localhost")
    monkeypatch.setenv("CHECKGATE_FLOWER_PORT", "15599")
    assert target_refusal("127.0.0.1", 8080) is None  # loopback is open…
    for host, port in (("127.0.0.1", 5672), ("::1", 6379), ("localhost", 6379), ("127.0.0.1", 15672)):
        assert target_refusal(host, port) == REFUSED
        assert PROTECTED in refusal_reason(host, port)
    assert target_refusal("name.example", 6379, "::ffff:127.0.0.1")
    assert target_refusal("localhost", 15599)  # …and the environment's ports are read when they change
    assert deployment_table().refuses("127.0.0.1", 15599)


# (host, port, resolved address, environment): one of every path of the verdict that refuses.
VERDICT_PATHS = {
    "deployment endpoint by name": ("rabbit-a.internal", 5672, None, {}),
    "deployment endpoint by address": ("x.example", 6379, "10.40.0.1", {}),
    "companion port of a deployment host": ("10.20.0.1", 15674, None, {}),
    "another port of a deployment host": ("10.20.0.1", 22, None, {}),
    "another port of a deployment host, by name": ("rabbit-a.internal", 443, None, {}),
    "a deployment host's embedded form": ("64:ff9b::a14:1", 22, None, {}),
    "local endpoint": ("::1", 5555, None, {"CHECKGATE_ALLOW_NETWORKS": "127.0.0.0/8,::1"}),
    "loopback by default": ("127.0.0.1", 22, None, {}),
    "localhost name": ("localhost", 22, None, {}),
    "this host's address": ("10.77.0.5", 22, None, {}),
    "unspecified": ("0.0.0.0", 22, None, {}),
    "link-local": ("fe80::1", 22, None, {}),
    "multicast": ("224.0.0.251", 5353, None, {}),
    "metadata address": ("169.254.169.254", 80, None, {}),
    "metadata address behind a name": ("x.example", 80, "169.254.169.254", {}),
    "embedded metadata address": ("64:ff9b::a9fe:a9fe", 80, None, {}),
    "metadata name": ("metadata.google.internal", 80, None, {}),
    "operator's denied network": ("10.9.0.1", 22, None, {"CHECKGATE_DENY_NETWORKS": "10.9.0.0/16"}),
    "operator's denied host": ("db.corp.example", 22, None, {"CHECKGATE_DENY_HOSTS": ".corp.example"}),
    "off the allowed networks": ("192.0.2.1", 22, None, {"CHECKGATE_ALLOW_NETWORKS": "10.0.0.0/8"}),
    "off the allowed hosts": ("other.example", 22, None, {"CHECKGATE_ALLOW_HOSTS": ".corp.example"}),
}


@pytest.mark.parametrize("path", sorted(VERDICT_PATHS))
def test_every_refusal_reads_the_same(
    path: str, default_env: pytest.MonkeyPatch, fake_nics: None, caplog: pytest.LogCaptureFixture
) -> None:
    """F12: whatever refused the target, the caller reads one text (so refusals cannot map the deployment:
    the broker's port of 10.20.0.1 reads as its port 22 and as any denied address); the log says why."""
    host, port, address, env = VERDICT_PATHS[path]
    for name, value in env.items():
        default_env.setenv(name, value)
    caplog.set_level(logging.INFO, logger="tasks.checks._guard")
    t = table()
    assert refusal_reason(host, port, address, endpoints=t), path
    assert target_refusal(host, port, address, endpoints=t) == REFUSED
    assert refusal_reason(host, port, address, endpoints=t) in caplog.text
    # Through resolve() as a check sees it (literals and refused names need no DNS), and at the gateway.
    if address is None:
        default_env.setattr(_guard, "deployment_table", lambda: t)  # the worker's table is this one
        with pytest.raises(ProbeFailure) as failure:
            resolve(host, port, Probe(None))
        assert (failure.value.reason, failure.value.detail) == ("target_refused", REFUSED)
    try:
        validate_host(host)
    except ValueError as exc:
        assert str(exc) == REFUSED


def test_a_failed_lookup_keeps_the_last_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([[(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.99.0.1", 0))], OSError("SERVFAIL")])

    def getaddrinfo(*args: object, **kwargs: object) -> list:
        answer = next(answers)
        if isinstance(answer, OSError):
            raise answer
        return answer

    monkeypatch.setattr(_guard._resolver, "getaddrinfo", getaddrinfo)
    first = _guard.lookup_protected_name("flaky.internal")
    assert _guard.lookup_protected_name("flaky.internal") == first == {ipaddress.ip_address("10.99.0.1")}


# --- the worker's path: resolve() judges after resolution -----------------------------------------


def test_resolve_judges_the_resolved_address_and_the_port(default_env: pytest.MonkeyPatch) -> None:
    probe = Probe(None)
    with pytest.raises(ProbeFailure, match=REFUSED) as refused_default:
        resolve("localhost", 8080, probe)  # a name: refused only once it resolved to loopback
    assert refused_default.value.reason == "target_refused"
    default_env.setenv("CHECKGATE_ALLOW_NETWORKS", "127.0.0.0/8,::1")
    assert resolve("localhost", 8080, probe, ip_version="4").ip == "127.0.0.1"
    with pytest.raises(ProbeFailure, match=REFUSED):
        resolve("localhost", 6379, probe)
    with pytest.raises(ProbeFailure, match=REFUSED):
        resolve("::ffff:127.0.0.1", 5672, probe)


def test_the_operators_resolver_is_judged_only_as_a_deployment_endpoint(default_env: pytest.MonkeyPatch) -> None:
    probe = Probe(None)
    assert resolve("127.0.0.1", 53, probe, operator_chosen=True).ip == "127.0.0.1"
    with pytest.raises(ProbeFailure, match=REFUSED):
        resolve("127.0.0.1", 6379, probe, operator_chosen=True)
