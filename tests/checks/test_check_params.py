"""Gateway-side validation of every check parameter, hostile values first: `REGISTRY[name].validate`."""

from __future__ import annotations

import logging

import pytest

from tasks.checks._guard import REFUSED
from tasks.registry import ParamError, load_checks

REGISTRY = load_checks()


@pytest.fixture(autouse=True)
def policy_log(caplog: pytest.LogCaptureFixture) -> None:
    """The policy's reasons are logged at INFO: captured, so a test can read why a target was refused."""
    caplog.set_level(logging.INFO, logger="tasks.checks._guard")


def _refused(check: str, given: dict[str, str]) -> ParamError:
    with pytest.raises(ParamError) as info:
        REGISTRY[check].validate(given)
    return info.value


def assert_says(error: ParamError, needle: str, caplog: pytest.LogCaptureFixture) -> None:
    """`needle` in the message; a "policy:" needle: the caller is told only `REFUSED`, the log says why."""
    if needle.startswith("policy:"):
        assert error.message == REFUSED, error
        assert needle.removeprefix("policy:") in caplog.text
    else:
        assert needle in error.message, error


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("file:///etc/passwd", "scheme must be http or https"),
        ("gopher://127.0.0.1:70/_HELO", "scheme must be http or https"),
        ("ftp://example.com/", "scheme"),
        ("javascript:alert(1)", "scheme"),
        ("//example.com/", "scheme"),
        ("http://", "no host"),
        ("http://127.0.0.1:70000/", "port"),
        ("http://127.0.0.1:0/", "port"),
        ("http://example.com:99999999999/", "port"),
        ("http://example.com:80:80/", "port"),
        ("http://169.254.169.254/latest/meta-data/", "policy:cloud metadata address"),
        ("http://169.254.169.254:80/", "policy:metadata"),
        ("http://[fd00:ec2::254]/", "policy:metadata"),
        ("http://[fe80::1%25eth0]/", "policy:link-local"),
        ("http://0/", "policy:unspecified address"),
        ("http://[::]:8080/", "policy:unspecified address"),
        ("http://[::ffff:169.254.169.254]/", "policy:metadata"),
        ("http://2852039166/", "policy:169.254.169.254"),
        ("http://0xa9fea9fe/", "policy:169.254.169.254"),
        ("http://0251.0376.0251.0376/", "policy:169.254.169.254"),
        ("http://169.254.43518/", "policy:169.254.169.254"),
        ("http://１６９．２５４．１６９．２５４/", "policy:169.254.169.254"),
        ("http://metadata.google.internal/computeMetadata/v1/", "policy:denied host"),
        ("http://user:pass@example.com/", "credentials"),
        ("http://example.com@169.254.169.254/", "credentials"),
        ("http://169.254.169.254\\@example.com/", "backslash"),
        ("http://example.com/\r\nX-Injected: 1", "control characters"),
        ("http://exa\tmple.com/", "control characters"),
        ("http://exa mple.com/", "whitespace"),
        ("http://example.com/\x00", "control characters"),
        ("http://💩.example/", "cannot be IDNA-encoded"),
        ("http://a_b!.example/", "invalid label"),
        ("http://[::1/", "not a valid URL"),
    ],
)
def test_http_url_refusals_name_the_field(url: str, needle: str, caplog: pytest.LogCaptureFixture) -> None:
    error = _refused("http", {"url": url})
    assert error.field == "url"
    assert_says(error, needle, caplog)
    assert str(error).startswith("url: ")


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/",
        "HTTPS://Example.COM/a/b?c=d#frag",
        "https://bücher.de/straße?q=ü",
        "http://127.0.0.1:8080/health",
        "http://localhost/",
        "http://[::1]:8080/",
        "http://10.0.0.1/",
        "http://_srv.example.com/",
    ],
)
def test_http_url_accepted(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Loopback opened the way an operator opens it while keeping everything else as by default.
    monkeypatch.setenv("CHECKGATE_ALLOW_NETWORKS", "0.0.0.0/0,::/0,127.0.0.0/8,::1")
    assert REGISTRY["http"].validate({"url": url})["url"] == url


def test_http_defaults() -> None:
    kwargs = REGISTRY["http"].validate({"url": "http://example.com/"})
    assert kwargs == {
        "url": "http://example.com/",
        "method": "GET",
        "body": None,
        "headers": None,
        "status_codes": "200-299",
        "body_match": None,
        "body_not_match": None,
        "follow_redirects": True,
        "max_redirects": 10,
        "verify_tls": True,
        "ca_bundle": None,
        "ca_pem": None,
        "ip_version": "any",
        "max_body_bytes": 65536,
        "http2": False,
    }


@pytest.mark.parametrize(
    ("given", "field", "needle"),
    [
        ({"method": "DELETE"}, "method", "one of"),
        ({"body": "x"}, "body", "method=POST"),
        ({"body": "x", "method": "HEAD"}, "body", "method=POST"),
        ({"body_not_match": "ERROR", "method": "HEAD"}, "body_not_match", "method=HEAD"),  # would always pass
        ({"body_match": "OK", "method": "HEAD"}, "body_match", "method=HEAD"),
        ({"headers": "NoColon"}, "headers", "Name:Value"),
        ({"headers": "Bad Name: x"}, "headers", "Name:Value"),
        ({"headers": "X-A: 1|"}, "headers", "Name:Value"),
        ({"headers": "Content-Length: 5"}, "headers", "set by the check"),
        ({"headers": "Transfer-Encoding: chunked"}, "headers", "set by the check"),
        ({"headers": "X-A: a\r\nX-B: b"}, "headers", "control characters"),
        ({"headers": "X-A: ☃"}, "headers", "Latin-1"),
        ({"headers": "|".join(f"X-{i}: {i}" for i in range(33))}, "headers", "at most"),
        ({"status_codes": "600"}, "status_codes", "not a status code"),
        ({"status_codes": "299-200"}, "status_codes", "empty"),
        ({"status_codes": "2xx,"}, "status_codes", "not a status code"),
        ({"status_codes": "ok"}, "status_codes", "not a status code"),
        ({"body_match": "("}, "body_match", "regular expression"),
        ({"body_not_match": "[a-"}, "body_not_match", "regular expression"),
        ({"follow_redirects": "maybe"}, "follow_redirects", "true or false"),
        ({"max_redirects": "21"}, "max_redirects", "<= 20"),
        ({"max_body_bytes": "-1"}, "max_body_bytes", ">= 0"),
        ({"max_body_bytes": str(10 * 1024 * 1024 + 1)}, "max_body_bytes", "<="),
        ({"ip_version": "5"}, "ip_version", "one of"),
        ({"http2": "h2"}, "http2", "true or false"),
        ({"verify_tls": "nope"}, "verify_tls", "true or false"),
        ({"ca_bundle": "relative.pem"}, "ca_bundle", "absolute"),
        ({"ca_bundle": "/etc/ssl/../../etc/shadow"}, "ca_bundle", "normalized"),
        ({"ca_bundle": "/tmp/a\nb.pem"}, "ca_bundle", "whitespace"),
        ({"url": "http://example.com/", "nope": "1"}, "nope", "unknown parameter"),
    ],
)
def test_http_other_params(given: dict[str, str], field: str, needle: str) -> None:
    error = _refused("http", {"url": "http://example.com/", **given})
    assert (error.field, needle in error.message) == (field, True), error


def test_http_good_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECKGATE_CA_DIRS", "/etc/ssl/certs")
    kwargs = REGISTRY["http"].validate(
        {
            "url": "https://example.com/",
            "method": "POST",
            "body": '{"a": 1}',
            "headers": "Content-Type: application/json|Authorization: Bearer x:y|Host: other.example",
            "status_codes": "200-299,301,4xx",
            "body_match": r"\bok\b",
            "follow_redirects": "false",
            "max_redirects": "0",
            "verify_tls": "no",
            "ca_bundle": "/etc/ssl/certs/ca-certificates.crt",
            "ip_version": "6",
            "max_body_bytes": "0",
        }
    )
    assert (kwargs["follow_redirects"], kwargs["verify_tls"], kwargs["max_redirects"]) == (False, False, 0)


@pytest.mark.parametrize(
    ("check", "given", "field", "needle"),
    [
        ("tcp", {"host": "169.254.169.254", "port": "80"}, "host", "policy:metadata"),
        ("tcp", {"host": "[fd00:ec2::254]", "port": "80"}, "host", "policy:metadata"),
        ("tcp", {"host": "fd00:ec2::254", "port": "80"}, "host", "policy:metadata"),
        ("tcp", {"host": "fe80::1", "port": "22"}, "host", "policy:link-local"),
        ("tcp", {"host": "0xa9.0xfe.0xa9.0xfe", "port": "22"}, "host", "policy:169.254.169.254"),
        ("tcp", {"host": "metadata.goog", "port": "80"}, "host", "policy:denied host"),
        ("tcp", {"host": "exa mple.com", "port": "80"}, "host", "whitespace"),
        ("tcp", {"host": "example.com\x00.evil", "port": "80"}, "host", "control"),
        ("tcp", {"host": "a" * 301, "port": "80"}, "host", "longer than"),
        ("tcp", {"host": "a..b", "port": "80"}, "host", "invalid label"),
        ("tcp", {"host": "x" * 64 + ".com", "port": "80"}, "host", "invalid label"),
        ("tcp", {"host": "☃.example", "port": "80"}, "host", "IDNA"),
        ("tcp", {"host": "[example.com]", "port": "80"}, "host", "not an IPv6 address"),
        ("tcp", {"host": "example.com", "port": "70000"}, "port", "<= 65535"),
        ("tcp", {"host": "example.com", "port": "0"}, "port", ">= 1"),
        ("tcp", {"host": "example.com", "port": "-1"}, "port", ">= 1"),
        ("tcp", {"host": "example.com", "port": "80x"}, "port", "integer"),
        ("tcp", {"host": "example.com"}, "port", "required"),
        ("tcp", {"host": "example.com", "port": "80", "expect": "("}, "expect", "regular expression"),
        ("tcp", {"host": "example.com", "port": "80", "server_name": "bad name"}, "server_name", "whitespace"),
        ("tcp", {"host": "example.com", "port": "80", "tls": "2"}, "tls", "true or false"),
        ("tls", {"host": "169.254.169.254"}, "host", "policy:metadata"),
        ("tls", {"host": "example.com", "port": "70000"}, "port", "<= 65535"),
        ("tls", {"host": "example.com", "warn_days": "-1"}, "warn_days", ">= 0"),
        ("tls", {"host": "example.com", "warn_days": "nan"}, "warn_days", "finite"),
        ("tls", {"host": "example.com", "warn_days": "4000"}, "warn_days", "<= 3650"),
        ("tls", {"host": "example.com", "server_name": "a_b c"}, "server_name", "whitespace"),
        ("tls", {}, "host", "required"),
        ("dns", {}, "name", "required"),
        ("dns", {"name": "a..b"}, "name", "invalid label"),
        ("dns", {"name": "bad name.example"}, "name", "whitespace"),
        ("dns", {"name": "☃.example"}, "name", "IDNA"),
        ("dns", {"name": "example.com", "record_type": "ANY"}, "record_type", "one of"),
        ("dns", {"name": "example.com", "record_type": "a"}, "record_type", "one of"),
        ("dns", {"name": "example.com", "server": "169.254.169.254"}, "server", "policy:metadata"),
        ("dns", {"name": "example.com", "server": "fe80::1"}, "server", "policy:link-local"),
        ("dns", {"name": "example.com", "port": "70000"}, "port", "<= 65535"),
        ("dns", {"name": "example.com", "rcode": "BOGUS"}, "rcode", "one of"),
        ("dns", {"name": "example.com", "protocol": "quic"}, "protocol", "one of"),
        ("dns", {"name": "example.com", "answer_match": "*"}, "answer_match", "regular expression"),
    ],
)
def test_other_checks_refuse(
    check: str, given: dict[str, str], field: str, needle: str, caplog: pytest.LogCaptureFixture
) -> None:
    error = _refused(check, given)
    assert error.field == field, error
    assert_says(error, needle, caplog)


def test_other_checks_accept_and_default() -> None:
    assert REGISTRY["tcp"].validate({"host": "bücher.de", "port": "443", "send": r"PING\r\n", "tls": "yes"}) == {
        "host": "bücher.de",
        "port": 443,
        "send": r"PING\r\n",
        "expect": None,
        "tls": True,
        "server_name": None,
        "verify_tls": True,
        "ca_bundle": None,
        "ca_pem": None,
        "ip_version": "any",
    }
    assert REGISTRY["tls"].validate({"host": "example.com"}) == {
        "host": "example.com",
        "port": 443,
        "server_name": None,
        "warn_days": 14.0,
        "ca_bundle": None,
        "ca_pem": None,
        "ip_version": "any",
    }
    assert REGISTRY["dns"].validate({"name": "_sip._tcp.example.com", "record_type": "SRV"}) == {
        "name": "_sip._tcp.example.com",
        "record_type": "SRV",
        "server": None,
        "port": 53,
        "protocol": "udp",
        "rcode": "NOERROR",
        "answer_includes": None,
        "answer_match": None,
    }
    assert REGISTRY["tcp"].validate({"host": "::1", "port": "22"})["host"] == "::1"
    assert REGISTRY["tcp"].validate({"host": "[::1]", "port": "22"})["host"] == "[::1]"


def test_policy_from_the_environment_applies_at_the_gateway(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CHECKGATE_DENY_NETWORKS", "10.0.0.0/8")
    monkeypatch.setenv("CHECKGATE_DENY_HOSTS", ".corp.example")
    assert_says(_refused("http", {"url": "http://10.1.2.3/"}), "policy:denied network", caplog)
    assert_says(_refused("tcp", {"host": "db.corp.example", "port": "5432"}), "policy:denied host", caplog)
    caplog.clear()
    assert_says(_refused("tcp", {"host": "CORP.example.", "port": "5432"}), "policy:denied host", caplog)
    REGISTRY["tcp"].validate({"host": "corp.example.com", "port": "5432"})
    monkeypatch.setenv("CHECKGATE_ALLOW_NETWORKS", "192.0.2.0/24")
    assert_says(_refused("http", {"url": "http://172.16.0.1/"}), "policy:not in CHECKGATE_ALLOW_NETWORKS", caplog)
    REGISTRY["http"].validate({"url": "http://192.0.2.7/"})
    REGISTRY["http"].validate({"url": "http://name.example/"})  # names are judged by the worker, after DNS


def test_ca_dirs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHECKGATE_CA_DIRS", "/etc/checkgate/ca")
    assert "CHECKGATE_CA_DIRS" in _refused("tls", {"host": "a.example", "ca_bundle": "/etc/passwd"}).message
    assert "CHECKGATE_CA_DIRS" in _refused("tls", {"host": "a.example", "ca_bundle": "/etc/checkgate/cax.pem"}).message
    REGISTRY["tls"].validate({"host": "a.example", "ca_bundle": "/etc/checkgate/ca/internal.pem"})


# Every parameter that takes a pattern is RE2: syntax only a backtracking engine has is refused at the
# gateway (400 naming the field), and matching never backtracks.
PATTERN_PARAMS = [
    ("http", {"url": "http://example.com/"}, "body_match"),
    ("http", {"url": "http://example.com/"}, "body_not_match"),
    ("tcp", {"host": "example.com", "port": "80"}, "expect"),
    ("dns", {"name": "example.com"}, "answer_match"),
]


@pytest.mark.parametrize(("check", "base", "field"), PATTERN_PARAMS)
@pytest.mark.parametrize("pattern", [r"(a)\1", "(?=a)b", "(?<!a)b", "a{1001}"])
def test_patterns_outside_re2_are_refused(check: str, base: dict[str, str], field: str, pattern: str) -> None:
    error = _refused(check, {**base, field: pattern})
    assert (error.field, "RE2" in error.message) == (field, True), error


@pytest.mark.parametrize(("check", "base", "field"), PATTERN_PARAMS)
def test_patterns_are_documented_as_re2(check: str, base: dict[str, str], field: str) -> None:
    described = {p["name"]: p for p in REGISTRY[check].describe()["params"]}
    assert "RE2" in described[field]["doc"]


def test_catastrophic_pattern_matches_in_linear_time() -> None:
    # (a+)+$ against 'a' * n + '!' takes 2**n steps in a backtracking engine; RE2 answers at once even
    # for a whole capped body. A broken engine makes this test hang (the suite's timeout ends it).
    from tasks.checks._pattern import compile_pattern

    assert compile_pattern(r"(a+)+$").search("a" * 1_000_000 + "!") is None
    assert compile_pattern(r"(x+x+)+y").search("x" * 1_000_000) is None
    assert compile_pattern(r"(?i)DATABASE").search("Could not connect to database") is not None


@pytest.mark.parametrize("pattern", [r"\pL{1000}", r"(?i)\pL{1000}", r"[\p{L}\p{N}\p{P}]{200}", r"(\pL|\pN){50}"])
def test_patterns_too_large_to_compile_are_refused_and_remembered(
    pattern: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nine characters of `\\pL{1000}` made RE2 build a huge program on the gateway's event loop (95-250 ms
    with RE2's default 8 MiB budget, the hostile-caller attack): the budget is small now, and a refused
    pattern is refused from memory the next time, without compiling again."""
    import re2

    from tasks.checks import _pattern

    error = _refused("http", {"url": "http://example.com/", "body_match": pattern})
    assert (error.field, "too large" in error.message) == ("body_match", True), error
    compiles = []
    real = re2.compile
    monkeypatch.setattr(re2, "compile", lambda *args: compiles.append(args) or real(*args))
    for _ in range(3):
        with pytest.raises(_pattern.PatternError):
            _pattern.compile_pattern(pattern)
    assert compiles == []
