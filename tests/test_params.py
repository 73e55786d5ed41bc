"""Unit tests of parameter validation: every bad value is refused with the field named."""

import pytest

from gateway.http_api import CheckHandler
from tasks.registry import Param, ParamError, check, load_checks

REGISTRY = load_checks()  # the built-in and the tests' check types (tests.support.env names them)


@pytest.mark.parametrize(
    ("param", "raw", "expected"),
    [
        (Param("n", int), "42", 42),
        (Param("n", int), "-7", -7),
        (Param("n", int), "+7", 7),
        (Param("f", float), "0.25", 0.25),
        (Param("b", bool), "TRUE", True),
        (Param("b", bool), "off", False),
        (Param("s", str), "hello", "hello"),
        (Param("c", str, choices=("a", "b")), "b", "b"),
    ],
)
def test_parse_accepts(param: Param, raw: str, expected: object) -> None:
    assert param.parse(raw) == expected


@pytest.mark.parametrize(
    ("param", "raw", "message"),
    [
        (Param("n", int), "abc", "must be an integer"),
        (Param("n", int), "1.5", "must be an integer"),
        (Param("n", int), "", "must be an integer"),
        (Param("n", int), " 1", "must be an integer"),
        (Param("n", int), "9" * 30, "must be an integer"),
        (Param("n", int, min=0, max=10), "11", "must be <= 10"),
        (Param("n", int, min=0, max=10), "-1", "must be >= 0"),
        (Param("f", float), "nan", "finite"),
        (Param("f", float), "inf", "finite"),
        (Param("f", float), "x", "must be a number"),
        (Param("b", bool), "maybe", "true or false"),
        (Param("s", str), "", "must not be empty"),
        (Param("s", str, max_length=3), "abcd", "longer than 3"),
        (Param("c", str, choices=("a", "b")), "z", "must be one of a, b"),
    ],
)
def test_parse_refuses_naming_the_field(param: Param, raw: str, message: str) -> None:
    with pytest.raises(ParamError) as info:
        param.parse(raw)
    assert info.value.field == param.name
    assert message in info.value.message


def test_validate_fills_defaults_and_converts() -> None:
    assert REGISTRY["add"].validate({"x": "1", "y": "-2"}) == {"x": 1, "y": -2}
    assert REGISTRY["boom"].validate({}) == {"code": 42}


@pytest.mark.parametrize(
    ("check", "given", "field"),
    [
        ("add", {"x": "1"}, "y"),
        ("add", {"x": "1", "y": "2", "z": "3"}, "z"),
        ("add", {"x": str(2**53), "y": "1"}, "x"),
        ("sleep", {"ms": "60001"}, "ms"),
        ("sleep", {"ms": "-1"}, "ms"),
        ("http", {"url": "file:///etc/passwd"}, "url"),
        ("http", {"url": "gopher://127.0.0.1:70/"}, "url"),
        ("http", {"url": "http://"}, "url"),
        ("http", {"url": "http://127.0.0.1:70000/"}, "url"),
    ],
)
def test_validate_refuses(check: str, given: dict[str, str], field: str) -> None:
    with pytest.raises(ParamError) as info:
        REGISTRY[check].validate(given)
    assert info.value.field == field


def test_gateway_params() -> None:
    sleep = REGISTRY["sleep"]
    assert CheckHandler._gateway_params(sleep, {"ms": "1"}) == ("sync", sleep.default_timeout, "json")
    assert CheckHandler._gateway_params(sleep, {"mode": "async", "timeout": "2.5"}) == ("async", 2.5, "json")
    assert CheckHandler._gateway_params(sleep, {"format": "prometheus"})[2] == "prometheus"
    bad_values = (
        {"mode": "later"},
        {"timeout": "0"},
        {"timeout": "-1"},
        {"timeout": "nan"},
        {"timeout": "1e9"},
        {"format": "xml"},
        {"format": "prometheus", "mode": "async"},
    )
    for bad in bad_values:
        with pytest.raises(ParamError) as info:
            CheckHandler._gateway_params(sleep, dict(bad))
        assert info.value.field in bad


@pytest.mark.parametrize("sharing", [{"coalesce": True}, {"cache_ttl": 5.0}])
def test_only_an_idempotent_check_may_share_results(sharing: dict) -> None:
    with pytest.raises(ValueError, match="only an idempotent check may share"):
        check("never_registered", idempotent=False, **sharing)(lambda: None)
    assert "never_registered" not in REGISTRY


def test_add_coalesces_and_sleep_does_not() -> None:
    checks = load_checks()
    # A sleep that joined one already running would answer early: throughput above clients / task time.
    assert (checks["add"].shares_results, checks["sleep"].shares_results) == (True, False)
    assert checks["tls"].shares_results  # a cache implies sharing in flight
