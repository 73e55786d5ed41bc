"""The target policy and host normalization on their own (tasks/checks/_guard.py)."""

from __future__ import annotations

import pytest

from tasks.checks import _guard
from tasks.checks._guard import PolicyConfigError, TargetPolicy, current_policy, normalize_host, parse_url


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


def test_default_policy_refuses_link_local_and_metadata_only() -> None:
    policy = current_policy()
    refused = ("169.254.169.254", "169.254.0.1", "fe80::1", "fd00:ec2::254", "::ffff:169.254.169.254", "0.0.0.0", "::")
    for address in refused:
        assert policy.address_refusal(address), address
    for address in ("127.0.0.1", "::1", "10.0.0.1", "192.168.1.1", "fd00:ec2::253", "8.8.8.8"):
        assert policy.address_refusal(address) is None, address
    assert policy.host_refusal("metadata.google.internal.")
    assert policy.host_refusal("example.com") is None


def test_most_specific_network_decides() -> None:
    policy = TargetPolicy(
        allow_networks=_guard._networks("169.254.10.0/24,fd00:ec2::254/128", "test"),
        deny_networks=_guard._DEFAULT_NETWORKS,
    )
    assert policy.address_refusal("169.254.10.5") is None  # the /24 allow beats the /16 deny
    assert "metadata" in policy.address_refusal("169.254.169.254")
    assert "link-local" in policy.address_refusal("fe80::1")
    assert policy.address_refusal("fd00:ec2::254")  # a tie is a refusal
    assert "not in CHECKGATE_ALLOW_NETWORKS" in policy.address_refusal("127.0.0.1")


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


def test_parse_url() -> None:
    target = parse_url("HTTPS://Bücher.DE/straße?q=ü&x=%20#frag")
    assert (target.scheme, target.host, target.port) == ("https", "xn--bcher-kva.de", 443)
    assert target.target == "/stra%C3%9Fe?q=%C3%BC&x=%20"
    assert target.url == "https://xn--bcher-kva.de/stra%C3%9Fe?q=%C3%BC&x=%20"
    ipv6 = parse_url("http://[::1]:8080")
    assert (ipv6.netloc, ipv6.target, ipv6.url) == ("[::1]:8080", "/", "http://[::1]:8080/")
