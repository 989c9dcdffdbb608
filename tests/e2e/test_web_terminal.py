"""The web terminal in a real headless Chromium: ``ssh USER@gw web CONTAINER`` prints a one-time
link; the page it opens is a shell in the container through the same session path as SSH
(recording, audit ``via: web``, ``sessions kill``, limits, revocation). One gateway and one
browser per module."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import pytest
from playwright.sync_api import BrowserContext, Page

from gateway.web.terminal import MAX_FRAME
from tests.e2e.helpers import (
    Gateway,
    GatewayFactory,
    free_port,
    has_process,
    one_line_error,
    unique,
    wait_until,
)
from tests.support.browser import chromium, status, terminal_text, wait_text
from tests.support.process import HOST, listening

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]

MakeContainer = Callable[..., str]
LINK = re.compile(r"^(http://\S+/web/login#([A-Za-z0-9_-]{43}))\r?$", re.MULTILINE)
ENDED = "() => document.body.dataset.state === 'ended'"
MAX_WEB = 2  # SSHGW_MAX_SESSIONS of this module's gateway: web terminals per user too


@pytest.fixture(scope="module")
def web(gateway_factory: GatewayFactory) -> tuple[Gateway, str]:
    """A gateway with the web listener on; its public URL."""
    port = free_port()
    origin = f"http://{HOST}:{port}"
    gw = gateway_factory(
        {
            "SSHGW_HTTP_LISTEN": f"{HOST}:{port}",
            "SSHGW_HTTP_PUBLIC_URL": origin,
            "SSHGW_MAX_SESSIONS": str(MAX_WEB),
        }
    )
    assert wait_until(lambda: listening(port), 30), "the web listener did not come up"
    return gw, origin


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    with chromium(tmp_path_factory.mktemp("chromium")) as context:
        yield context


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    p = browser.new_page()
    yield p
    p.close()


def link_for(gw: Gateway, user: str, target: str) -> tuple[str, str]:
    """``ssh USER@gw web TARGET``: the link it prints, and its token."""
    res = gw.ssh(user, "web", target)
    out = res.stdout.decode()
    assert res.returncode == 0, (out, res.stderr.decode())
    found = LINK.search(out)
    assert found, out
    return found.group(1), found.group(2)


def open_terminal(page: Page, url: str) -> None:
    page.goto(url)
    page.wait_for_function("() => document.body.dataset.state !== undefined", timeout=20_000)
    assert status(page) == "connected", status(page)


def user_with_container(
    gw: Gateway, make_container: MakeContainer, image: str, prefix: str
) -> tuple[str, str]:
    c = make_container(image)
    user = unique(prefix)
    gw.add_user(user)
    gw.grant(c, user=user, rights="shell", logins="app")
    return user, c


def sleeping(
    gw: Gateway, page: Page, make_container: MakeContainer, image: str, prefix: str, secs: int
) -> tuple[str, str]:
    """A user's page with ``sleep SECS`` running in a new container: (user, container)."""
    user, c = user_with_container(gw, make_container, image, prefix)
    open_terminal(page, link_for(gw, user, c)[0])
    page.keyboard.type(f"sleep {secs}\n")
    assert wait_until(lambda: has_process(c, rf"sleep {secs}\b"), timeout=30)
    return user, c


def shell_session(gw: Gateway, user: str) -> dict[str, object]:
    """The user's one shell session (the link's own session is a listing)."""
    shown = json.loads(gw.cli("sessions", "--user", user, "--json").stdout)
    (shell,) = [s for s in shown if s["kind"] == "shell"]
    return dict(shell)


def active(gw: Gateway, user: str) -> list[dict[str, object]]:
    res = gw.cli("sessions", "--active", "--user", user, "--json")
    return list(json.loads(res.stdout))


def test_a_link_opens_a_shell_in_the_browser(
    web: tuple[Gateway, str], page: Page, make_container: MakeContainer, busybox_image: str
) -> None:
    gw, _ = web
    user, c = user_with_container(gw, make_container, busybox_image, "wt")
    url, token = link_for(gw, user, c)
    open_terminal(page, url)
    assert page.url.endswith("/web/"), page.url  # no token left in the address
    assert token not in page.url

    page.keyboard.type("echo $((6*7))\n")
    wait_text(page, r"^42\s*$")
    page.keyboard.type("id -un\n")
    wait_text(page, r"^app\s*$")

    # The browser's window decides the terminal's size, and a resize reaches the container.
    page.keyboard.type("echo A$(stty size)\n")
    before = wait_text(page, r"^A(\d+) (\d+)\s*$")
    rows, cols = int(before.group(1)), int(before.group(2))
    width = page.eval_on_selector(".xterm-screen", "el => el.getBoundingClientRect().width")
    page.set_viewport_size({"width": 600, "height": 300})
    page.wait_for_function(
        f"() => document.querySelector('.xterm-screen').getBoundingClientRect().width < {width}"
    )
    page.keyboard.type("echo B$(stty size)\n")
    after = wait_text(page, r"^B(\d+) (\d+)\s*$")
    assert int(after.group(2)) < cols and int(after.group(1)) < rows, (before, after)

    (sess,) = active(gw, user)
    assert sess["kind"] == "shell" and sess["container"] == c and sess["login"] == "app"

    page.keyboard.type("exit\n")
    page.wait_for_function(ENDED, timeout=20_000)
    assert "exit status 0" in status(page)
    assert wait_until(lambda: active(gw, user) == [], timeout=20)

    # Audit: the session is marked as the web's; the recording has what the page showed.
    events = json.loads(gw.cli("audit", "--user", user, "--json").stdout)
    starts = [e for e in events if e["kind"] == "session.start"]
    shell = [e for e in starts if e["detail"].get("kind") == "shell"]
    assert len(shell) == 1 and shell[0]["detail"].get("via") == "web", starts
    shown = json.loads(gw.cli("sessions", "show", str(sess["id"]), "--json").stdout)
    assert shown["end_reason"] == "exit"
    assert shown["recording"], shown
    recording = Path(shown["recording"])
    assert wait_until(recording.exists, timeout=30), recording
    header = json.loads(recording.read_text().splitlines()[0])
    assert header["width"] == cols and header["height"] == rows, header
    assert "42" in recording.read_text()


def test_a_link_works_once(
    web: tuple[Gateway, str],
    browser: BrowserContext,
    make_container: MakeContainer,
    busybox_image: str,
) -> None:
    gw, _ = web
    user, c = user_with_container(gw, make_container, busybox_image, "wo")
    url, _ = link_for(gw, user, c)
    first, second = browser.new_page(), browser.new_page()
    try:
        open_terminal(first, url)
        second.goto(url)
        second.wait_for_selector("#status.error", timeout=20_000)
        assert second.url.endswith("/web/login"), second.url  # refused at the link
        assert status(second).startswith("this link was used or has expired"), status(second)
        # The first one is not disturbed.
        first.keyboard.type("echo $((6*7))\n")
        wait_text(first, r"^42\s*$")
        # Reloading the terminal page does not open a second session with the same cookie.
        second.goto(url.split("/web/")[0] + "/web/")
        second.wait_for_function(ENDED, timeout=20_000)
        assert "could not be opened" in status(second), status(second)
        assert len(active(gw, user)) == 1
    finally:
        first.close()
        second.close()


def test_an_expired_link_is_refused(
    web: tuple[Gateway, str], page: Page, make_container: MakeContainer, busybox_image: str
) -> None:
    gw, _ = web
    user, c = user_with_container(gw, make_container, busybox_image, "we")
    url, token = link_for(gw, user, c)
    # Its minute is over (the row as any replica would read it).
    with sqlite3.connect(gw.data_dir / "sshgw.db") as db:
        done = db.execute(
            "UPDATE web_links SET expires_at = '2000-01-01 00:00:00' WHERE link_hash = ?",
            (hashlib.sha256(token.encode()).hexdigest(),),
        )
        assert done.rowcount == 1
    page.goto(url)
    page.wait_for_selector("#status.error", timeout=20_000)
    assert page.url.endswith("/web/login"), page.url  # refused at the link
    assert status(page).startswith("this link was used or has expired"), status(page)
    assert active(gw, user) == []


def test_another_origin_is_refused(
    web: tuple[Gateway, str], make_container: MakeContainer, busybox_image: str
) -> None:
    gw, origin = web
    user, c = user_with_container(gw, make_container, busybox_image, "wx")
    _, token = link_for(gw, user, c)
    evil = "http://evil.example"

    async def attempt() -> list[object]:
        seen: list[object] = []
        async with aiohttp.ClientSession() as http:
            # The link is not redeemed for another origin …
            async with http.post(
                f"{origin}/web/login", json={"token": token}, headers={"Origin": evil}
            ) as resp:
                seen.append(resp.status)
            # … and is still good for its own.
            async with http.post(
                f"{origin}/web/login", json={"token": token}, headers={"Origin": origin}
            ) as resp:
                seen.append(resp.status)
                cookie = resp.cookies["sshgw_web"]
                seen.append(cookie["httponly"] and cookie["secure"] and cookie["samesite"])
            headers = {"Cookie": f"sshgw_web={cookie.value}"}
            for who in (evil, None):  # a page elsewhere, a client that sends no Origin
                try:
                    async with http.ws_connect(
                        f"{origin}/web/ws", origin=who, headers=headers
                    ) as ws:
                        await ws.close()
                        seen.append(101)
                except aiohttp.WSServerHandshakeError as exc:
                    seen.append(exc.status)
            # The refused attempts left the cookie unused: the right origin opens the session.
            async with http.ws_connect(f"{origin}/web/ws", origin=origin, headers=headers) as ws:
                await ws.send_bytes(b"echo $((6*7))\n")
                text = b""
                while b"42\r\n" not in text:
                    msg = await asyncio.wait_for(ws.receive(), 20)
                    assert msg.type == aiohttp.WSMsgType.BINARY, msg
                    text += msg.data
                seen.append("42")
                # A frame over the size limit ends the session (1009: message too big).
                await ws.send_bytes(b"x" * (MAX_FRAME + 1))
                while not ws.closed:
                    await asyncio.wait_for(ws.receive(), 20)
                seen.append(ws.close_code)
        return seen

    # Playwright's sync API keeps an event loop in this thread: the client runs in another.
    with ThreadPoolExecutor(1) as pool:
        seen = pool.submit(asyncio.run, attempt()).result(timeout=120)
    assert seen == [403, 204, "Strict", 403, 403, "42", 1009], seen
    assert wait_until(lambda: active(gw, user) == [], timeout=20)


def test_kill_from_the_cli_ends_the_page_session(
    web: tuple[Gateway, str], page: Page, make_container: MakeContainer, busybox_image: str
) -> None:
    gw, _ = web
    user, c = sleeping(gw, page, make_container, busybox_image, "wk", 321)
    (sess,) = active(gw, user)
    gw.cli("sessions", "kill", str(sess["id"]))
    page.wait_for_function(ENDED, timeout=30_000)
    assert "terminated by an administrator" in terminal_text(page)
    assert "session ended" in status(page)
    assert wait_until(lambda: not has_process(c, r"sleep 321\b"), timeout=30)


def test_revocation_ends_the_page_session(
    web: tuple[Gateway, str], page: Page, make_container: MakeContainer, busybox_image: str
) -> None:
    """The key the link was asked with is the page's credential: the observer re-checks it
    like an SSH connection's, and a disabled user's page session ends."""
    gw, _ = web
    user, c = sleeping(gw, page, make_container, busybox_image, "wv", 432)
    gw.cli("user", "disable", user)
    page.wait_for_function(ENDED, timeout=30_000)
    assert "your access was revoked" in terminal_text(page)
    assert wait_until(lambda: not has_process(c, r"sleep 432\b"), timeout=30)
    assert shell_session(gw, user)["end_reason"] == "revoked"


def test_closing_the_page_ends_the_session(
    web: tuple[Gateway, str],
    browser: BrowserContext,
    make_container: MakeContainer,
    busybox_image: str,
) -> None:
    gw, _ = web
    page = browser.new_page()
    user, c = sleeping(gw, page, make_container, busybox_image, "wc", 654)
    page.close()
    assert wait_until(lambda: active(gw, user) == [], timeout=30)
    assert wait_until(lambda: not has_process(c, r"sleep 654\b"), timeout=30)
    assert shell_session(gw, user)["end_reason"] == "client_gone"


def test_access_is_checked_again_when_the_page_opens(
    web: tuple[Gateway, str], page: Page, make_container: MakeContainer, busybox_image: str
) -> None:
    gw, _ = web
    user, c = user_with_container(gw, make_container, busybox_image, "wr")
    # No shell right, or no grant at all: no link.
    other = make_container(busybox_image)
    res = gw.ssh(user, "web", other)
    assert res.returncode != 0 and b"no such container" in res.stderr, res
    assert not LINK.search(res.stdout.decode())
    # The grant is removed between the link and the page: refused when the page opens.
    url, _ = link_for(gw, user, c)
    grants = json.loads(gw.cli("grant", "list", "--json").stdout)
    (mine,) = [g for g in grants if g.get("user") == user]
    gw.cli("grant", "remove", str(mine["id"]))
    page.goto(url)
    page.wait_for_function(ENDED, timeout=20_000)
    assert "no such container" in status(page), status(page)
    assert active(gw, user) == []


def test_web_terminals_count_against_max_sessions(
    web: tuple[Gateway, str],
    browser: BrowserContext,
    make_container: MakeContainer,
    busybox_image: str,
) -> None:
    gw, _ = web
    user, c = user_with_container(gw, make_container, busybox_image, "wm")
    pages = [browser.new_page() for _ in range(MAX_WEB + 1)]
    try:
        for p in pages[:MAX_WEB]:
            open_terminal(p, link_for(gw, user, c)[0])
        last = pages[-1]
        last.goto(link_for(gw, user, c)[0])
        last.wait_for_function(ENDED, timeout=20_000)
        assert "too many web terminals" in status(last), status(last)
        assert len(active(gw, user)) == MAX_WEB
    finally:
        for p in pages:
            p.close()


def test_bad_web_commands_get_one_line(web: tuple[Gateway, str], gateway: Gateway) -> None:
    """A malformed target, and a gateway without the web terminal: one line, no link."""
    gw, _ = web
    user = unique("wb")
    gw.add_user(user)
    for args in (("web",), ("web", "a", "b"), ("web", "bad/name")):
        res = gw.ssh(user, *args)
        assert res.returncode != 0 and not LINK.search(res.stdout.decode()), res
        assert one_line_error(res.stderr).startswith("sshgw: "), res.stderr
        assert b"usage: ssh USER@gw web CONTAINER" in res.stderr, res.stderr
    gateway.add_user(user)
    res = gateway.ssh(user, "web", "web1")
    assert res.returncode != 0 and res.stdout == b"", res
    assert one_line_error(res.stderr) == "sshgw: the web terminal is off on this gateway"
