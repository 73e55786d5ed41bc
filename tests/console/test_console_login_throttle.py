"""The login throttle under concurrency, in-process: a real console app on a real socket, the password
check replaced by a stand-in that takes 50 ms in the executor (as scrypt does) and counts its calls."""

from __future__ import annotations

import asyncio
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import tornado.httpclient
import tornado.httpserver
import tornado.web

from gateway.console import Console, console_routes
from gateway.console import handlers as console_handlers
from gateway.console.auth import DEVICE_COOKIE, LoginThrottle, Sessions, hash_password
from gateway.console.config import UserConfig, parse_settings
from tests.support.stack import free_port

RIGHT = "the-right-password"


class Checks:
    """Password checks made (thread-safe: they run in the default executor)."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, users: dict[str, UserConfig], name: str, password: str) -> UserConfig | None:
        with self._lock:
            self.names.append(name)
        time.sleep(0.05)  # scrypt's cost: long enough for every concurrent request to reach the check
        return users.get(name) if password == RIGHT else None


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> Iterator[Checks]:
    counter = Checks()
    monkeypatch.setattr(console_handlers, "check_login", counter)
    yield counter


def make_console(tmp_path: Path, throttle: LoginThrottle) -> Console:
    raw = {
        "secret": "s" * 40,
        "audit_db": str(tmp_path / "audit.sqlite3"),
        "nodes": [{"name": "n", "url": f"http://127.0.0.1:{free_port()}/RPC2"}],
        "users": [{"name": "admin", "password_hash": hash_password(RIGHT), "role": "admin"}],
    }
    console = Console(parse_settings(raw, tmp_path, {}))
    console.throttle = throttle
    return console


class Client:
    """Posts login forms (with the XSRF cookie and Origin a browser sends) to a console on `port`."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/console/login"
        self.http = tornado.httpclient.AsyncHTTPClient(force_instance=True, max_clients=200)
        self.xsrf = ""
        self.cookies: dict[str, str] = {}

    async def start(self) -> None:
        page = await self.http.fetch(self.url)
        cookie = next(c for c in page.headers.get_list("Set-Cookie") if c.startswith("_xsrf="))
        self.xsrf = cookie.split(";")[0].partition("=")[2]
        self.cookies["_xsrf"] = self.xsrf

    async def login(self, name: str, password: str) -> tornado.httpclient.HTTPResponse:
        body = urllib.parse.urlencode({"name": name, "password": password, "_xsrf": self.xsrf})
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        headers = {"Cookie": cookie, "Origin": self.url.rsplit("/console", 1)[0]}
        response = await self.http.fetch(
            self.url, method="POST", body=body, headers=headers, follow_redirects=False, raise_error=False
        )
        for line in response.headers.get_list("Set-Cookie"):
            key, _, value = line.split(";")[0].partition("=")
            if key == DEVICE_COOKIE:
                self.cookies[key] = value
        return response


async def serve(console: Console) -> tuple[tornado.httpserver.HTTPServer, Client]:
    server = tornado.httpserver.HTTPServer(tornado.web.Application(console_routes(console)))
    port = free_port()
    server.listen(port, "127.0.0.1")
    client = Client(port)
    await client.start()
    return server, client


async def another_browser(client: Client) -> Client:
    other = Client(int(urllib.parse.urlsplit(client.url).port or 0))
    await other.start()
    return other


def retry_after(response: tornado.httpclient.HTTPResponse) -> int:
    assert response.code == 429, response.code
    value = response.headers.get("Retry-After", "")
    assert value.isdigit() and int(value) >= 1, value
    return int(value)


def test_concurrent_wrong_passwords_get_no_more_checks_than_the_limit(tmp_path: Path, checks: Checks) -> None:
    """60 wrong passwords for one name at once: 5 are checked (403), 55 refused before hashing (429)."""

    async def main() -> list[int]:
        server, client = await serve(make_console(tmp_path, LoginThrottle(per_name=5, per_client=50, window=300)))
        try:
            responses = await asyncio.gather(*(client.login("admin", f"guess-{i}") for i in range(60)))
        finally:
            server.stop()
        for response in responses:
            if response.code == 429:
                assert retry_after(response) <= 60  # the next slot: window / per_name
        return sorted(r.code for r in responses)

    assert sorted(asyncio.run(main())) == [403] * 5 + [429] * 55
    assert len(checks.names) == 5


def test_concurrent_guesses_across_names_get_no_more_checks_than_the_client_limit(
    tmp_path: Path, checks: Checks
) -> None:
    """60 names at once from one address: the per-client limit (50) holds too."""

    async def main() -> list[int]:
        server, client = await serve(make_console(tmp_path, LoginThrottle(per_name=5, per_client=50, window=300)))
        try:
            responses = await asyncio.gather(*(client.login(f"user{i}", "guess") for i in range(60)))
        finally:
            server.stop()
        for response in responses:
            if response.code == 429:
                assert retry_after(response) <= 6  # window / per_client
        return [r.code for r in responses]

    assert sorted(asyncio.run(main())) == [403] * 50 + [429] * 10
    assert len(checks.names) == 50


def test_the_right_password_gets_in_at_the_next_slot_after_an_attack(tmp_path: Path, checks: Checks) -> None:
    """After 60 concurrent wrong guesses, the owner waits one interval (window / per_name = 1 s here),
    not the whole window (5 s), and a guesser still gets only one check per interval."""

    async def main() -> None:
        server, client = await serve(make_console(tmp_path, LoginThrottle(per_name=5, per_client=50, window=5)))
        try:
            await asyncio.gather(*(client.login("admin", f"guess-{i}") for i in range(60)))
            attacked = time.monotonic()
            refused = await client.login("admin", RIGHT)
            wait = retry_after(refused)
            assert wait <= 1, f"Retry-After {wait} s: longer than one interval (1 s)"
            await asyncio.sleep(wait)
            # The guesser goes on at the slot's rate: one more check, then 429 again until the next.
            guesses = [await client.login("admin", "guess-again") for _ in range(3)]
            assert [g.code for g in guesses] == [403, 429, 429]
            await asyncio.sleep(retry_after(guesses[-1]))
            accepted = await client.login("admin", RIGHT)
            assert accepted.code == 302, accepted.code
            assert time.monotonic() - attacked < 2 * 1 + 1.5  # two intervals (one lost to the guesser) + slack
            assert (await client.login("admin", "a-typo")).code == 403  # success gave the name a fresh start
        finally:
            server.stop()

    asyncio.run(main())
    assert checks.names.count("admin") == 5 + 1 + 1 + 1  # attack, one guess per slot, the owner, the typo


def test_a_browser_that_logged_in_before_is_not_slowed_by_a_guesser(tmp_path: Path, checks: Checks) -> None:
    """The owner's browser holds a device cookie from an earlier login: while a stranger (same address)
    keeps guessing at every slot, the owner's password is checked at once, typo included; a browser
    without the cookie, or with one for another name or forged, is in the shared, slowed pool."""

    async def main() -> None:
        server, stranger = await serve(make_console(tmp_path, LoginThrottle(per_name=5, per_client=50, window=300)))
        try:
            owner = await another_browser(stranger)
            assert (await owner.login("admin", RIGHT)).code == 302
            assert DEVICE_COOKIE in owner.cookies
            stop = asyncio.Event()

            async def guess() -> list[int]:
                codes = []
                while not stop.is_set():
                    codes.append((await stranger.login("admin", "guess")).code)
                    await asyncio.sleep(0.01)
                return codes

            guesser = asyncio.create_task(guess())
            await asyncio.sleep(0.5)
            assert (await owner.login("admin", "a-typo")).code == 403  # checked, not refused
            assert (await owner.login("admin", RIGHT)).code == 302
            newcomer = await another_browser(stranger)
            assert (await newcomer.login("admin", RIGHT)).code == 429  # no cookie: the shared pool
            signed = owner.cookies[DEVICE_COOKIE]
            newcomer.cookies[DEVICE_COOKIE] = signed[:-1] + ("0" if signed[-1] != "0" else "1")
            assert (await newcomer.login("admin", RIGHT)).code == 429  # a forged cookie is no cookie
            stop.set()
            codes = await guesser
            assert codes.count(403) == 5 and codes.count(429) == len(codes) - 5 > 10
        finally:
            server.stop()

    asyncio.run(main())


def test_a_device_cookie_is_good_only_for_its_user_and_secret() -> None:
    sessions = Sessions("s" * 40, 12)
    cookie = sessions.new_device("view").decode()
    device = sessions.device_for(cookie, "view")
    assert device and sessions.device_for(sessions.new_device("view", device).decode(), "view") == device
    assert sessions.device_for(cookie, "admin") is None  # a viewer's browser gets no pass for admin
    assert Sessions("t" * 40, 12).device_for(cookie, "view") is None
    assert sessions.device_for("junk", "view") is None and sessions.device_for(None, "view") is None
