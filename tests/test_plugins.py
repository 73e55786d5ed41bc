"""A team adds its own check type from a separate package, through the `checkgate.checks` entry point."""

import urllib.parse
from pathlib import Path

from tests.support.env import BACKEND_URL, BROKER_URL
from tests.support.stack import Stack, http_get

# The whole third-party package: 14 lines of code (the original system's `route_check`).
PLUGIN = '''
from tasks.registry import Param, check


@check(
    "route",
    params=(Param("path", str, required=True), Param("method", str, default="GET", choices=("GET", "POST"))),
    queue="route",
)
def route_check(path: str, method: str) -> dict:
    """Does our router have a rule for this method and path?"""
    rules = {("GET", "/health"), ("GET", "/users"), ("POST", "/users")}
    ok = (method, path) in rules
    return {"ok": ok, **({} if ok else {"reason": "no_route"}), "duration_ms": 0.0}
'''


def install_plugin(site: Path) -> None:
    """Install the package the way pip would leave it: the module plus its dist-info with the entry point."""
    (site / "route_check.py").write_text(PLUGIN)
    info = site / "route_check-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: route-check\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[checkgate.checks]\nroute = route_check\n")


def test_a_separate_package_adds_a_check_type(tmp_path: Path) -> None:
    assert len([line for line in PLUGIN.strip().splitlines() if line.strip()]) < 20
    site = tmp_path / "site"
    site.mkdir()
    install_plugin(site)
    with Stack(tmp_path, f"cgp{tmp_path.name[-6:].replace('-', '')}_", BROKER_URL, BACKEND_URL) as stack:
        stack.env["PYTHONPATH"] += f":{site}"
        stack.start_worker("route", ["route"], concurrency=2)
        gateway = stack.start_gateway("gw")
        status, body, _ = http_get(f"{gateway}/check/route?path={urllib.parse.quote('/users')}&method=POST")
        assert (status, body["result"]["ok"], body["worker"].split("@")[0]) == (200, True, f"{stack.prefix}route")
        status, body, _ = http_get(f"{gateway}/check/route?path=/nope")
        assert (status, body["result"]) == (200, {"ok": False, "reason": "no_route", "duration_ms": 0.0})
        status, body, _ = http_get(f"{gateway}/check/route?path=/users&method=PUT")
        assert (status, body["field"]) == (400, "method")
        _, checks, _ = http_get(f"{gateway}/checks")
        assert any(c["name"] == "route" and c["queue"] == f"{stack.prefix}route" for c in checks["checks"])
