"""The web terminal's pure parts: its channel adapter (gateway.web.termio: control frames parsed
strictly, input and output bounded, frames sent in order), the page's size and the public URL."""

from __future__ import annotations

import asyncio

import asyncssh
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import Settings
from gateway.errors import InvalidInput
from gateway.observe.revoke import LiveConn, revocation
from gateway.ssh.listing import render_web_link, web_request
from gateway.store import AuthUser
from gateway.store.weblinks import WebGrant, digest
from gateway.web.terminal import _credential, _size
from gateway.web.termio import IN_HIGH, OUT_HIGH, WebInput, WebOutput, parse_control


def test_resize_frames_are_parsed_strictly() -> None:
    assert parse_control('{"type": "resize", "cols": 120, "rows": 40}') == (120, 40)
    for bad in (
        "",
        "[]",
        "not json",
        '{"type": "resize", "cols": 0, "rows": 40}',
        '{"type": "resize", "cols": 1001, "rows": 40}',
        '{"type": "resize", "cols": true, "rows": 40}',
        '{"type": "resize", "cols": 80.5, "rows": 40}',
        '{"type": "resize", "cols": "80", "rows": 40}',
        '{"type": "exit", "cols": 80, "rows": 40}',
        '{"type": "resize", "cols": 80, "rows": 40, "pad": "' + "x" * 300 + '"}',
    ):
        assert parse_control(bad) is None, bad


@given(st.text(max_size=300))
def test_any_text_frame_is_a_size_or_nothing(text: str) -> None:
    size = parse_control(text)
    assert size is None or all(1 <= v <= 1000 for v in size)


def test_the_size_at_open_comes_from_the_query_within_bounds() -> None:
    assert _size({"cols": "120", "rows": "40"}) == (120, 40)
    for bad in ({}, {"cols": "0", "rows": "5"}, {"cols": "１２", "rows": "5"}, {"cols": "9" * 50}):
        assert _size(bad) == (80, 24)


async def test_input_reports_a_resize_before_the_next_keystrokes() -> None:
    stdin = WebInput(80, 24)
    stdin.feed(b"abc")
    stdin.resize(100, 30)
    stdin.resize(120, 40)  # coalesced: the newest size
    with pytest.raises(asyncssh.TerminalSizeChanged) as exc:
        await stdin.read(10)
    assert (exc.value.width, exc.value.height) == (120, 40)
    assert await stdin.read(2) == b"ab"
    assert await stdin.read(10) == b"c"
    stdin.eof()
    assert await stdin.read(10) == b""


async def test_input_stops_taking_frames_while_the_container_is_behind() -> None:
    stdin = WebInput(80, 24)
    stdin.feed(b"x" * IN_HIGH)
    room = asyncio.ensure_future(stdin.room())
    await asyncio.sleep(0)
    assert not room.done()  # the socket is not read meanwhile
    await stdin.read(IN_HIGH)
    await asyncio.wait_for(room, 1)


class Sink:
    def __init__(self) -> None:
        self.frames: list[bytes | str] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send_bytes(self, data: bytes) -> None:
        await self.gate.wait()
        self.frames.append(data)

    async def send_str(self, data: str) -> None:
        await self.gate.wait()
        self.frames.append(data)


async def test_output_is_sent_in_order_with_its_control_frames() -> None:
    sink = Sink()
    out = WebOutput(sink)
    runner = asyncio.ensure_future(out.run())
    out.write(b"42\r\n")
    out.control(type="exit", status=0)
    await asyncio.wait_for(out.flush(), 1)
    assert sink.frames == [b"42\r\n", '{"type": "exit", "status": 0}']
    out.close()
    await asyncio.wait_for(runner, 1)


async def test_a_slow_browser_holds_the_bridge_and_bounds_the_queue() -> None:
    sink = Sink()
    sink.gate.clear()  # the browser's socket takes nothing
    out = WebOutput(sink)
    runner = asyncio.ensure_future(out.run())
    chunk = b"y" * 32 * 1024
    for _ in range(OUT_HIGH // len(chunk)):
        await asyncio.wait_for(out.drain(), 1)
        out.write(chunk)
    drain = asyncio.ensure_future(out.drain())
    await asyncio.sleep(0.05)
    assert not drain.done()  # the bridge waits instead of queueing more
    sink.gate.set()
    await asyncio.wait_for(drain, 1)
    out.close()  # the browser went away: writers are let go with an error
    with pytest.raises(ConnectionError):
        out.write(b"more")
    with pytest.raises(ConnectionError):
        await out.drain()
    await asyncio.wait_for(runner, 1)


def test_the_public_url_is_an_origin() -> None:
    """SSHGW_HTTP_PUBLIC_URL is compared with the browser's Origin header as it says it."""
    cases = {
        "https://GW.example.com/": "https://gw.example.com",
        "https://gw.example.com:443": "https://gw.example.com",
        "http://127.0.0.1:8022": "http://127.0.0.1:8022",
        "http://[::1]:80": "http://[::1]",
        "": None,
    }
    for given_url, origin in cases.items():
        assert Settings(http_public_url=given_url).http_public_url == origin
    for bad in ("ftp://gw", "https://gw/web", "https://u:p@gw", "https://gw:99999", "gw:8022"):
        with pytest.raises(InvalidInput):
            Settings(http_public_url=bad)


def test_the_links_credential_is_rechecked_as_a_connections() -> None:
    """A link asked for with a password stays good only while that password hash is the
    user's; one asked for with a key, while the key is the user's (gateway.observe.revoke)."""
    user = AuthUser("alice", False, "$argon2id$old", (), frozenset())
    by_password = WebGrant("alice", "web1", None, "password", digest("$argon2id$old"))
    live = LiveConn("c", "alice", "-", "password", None, None, lambda: None)
    cred = _credential(by_password, user)
    live.password_hash = cred.password_hash
    assert revocation(live, user) is None
    changed = AuthUser("alice", False, "$argon2id$new", (), frozenset())
    cred = _credential(by_password, changed)
    live.password_hash = cred.password_hash
    assert revocation(live, changed) == "password changed"
    by_key = WebGrant("alice", "web1", None, "publickey", "SHA256:gone")
    cred = _credential(by_key, user)
    assert cred.key == "SHA256:gone"
    key_live = LiveConn("c", "alice", "-", "publickey", cred.key, None, lambda: None)
    assert revocation(key_live, user) == "key removed"


def test_the_web_command_and_its_answer() -> None:
    """``ssh alice@gw web web1``: the command is one word after ``web``; anything else that is
    not ``web`` is the listing; the answer is the link alone on its first line."""
    assert web_request("web web1") == "web1"
    assert web_request("  web   web1+root ") == "web1+root"
    assert web_request("web") == "" and web_request("web a b") == ""
    assert web_request(None) is None and web_request("ls") is None and web_request("webx a") is None
    out = render_web_link("https://gw/web/login#T", "we\x1bb1", 60, pty=True).decode()
    first, second, _ = out.split("\r\n")
    assert first == "https://gw/web/login#T"
    assert "\x1b" not in second and "60 seconds" in second  # a container's name shown literally
