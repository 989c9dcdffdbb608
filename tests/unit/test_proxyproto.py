"""The PROXY protocol parser (gateway.ssh.proxyproto), sans I/O: the spec's vectors, split at
every byte, truncated, oversized and garbage headers, who is trusted, and the settings."""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import Settings, load_settings
from gateway.errors import InvalidInput
from gateway.ssh.limits import StartupGate, Startups
from gateway.ssh.proxyproto import (
    LOCAL,
    PROXY,
    V1_MAX,
    V2_MAX_BODY,
    V2_SIGNATURE,
    HeaderError,
    HeaderReader,
    ProxyHeader,
    is_trusted,
    parse_header,
    parse_networks,
)

BANNER = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"


def v2(ver_cmd: int, fam: int, body: bytes, size: int | None = None) -> bytes:
    return (
        V2_SIGNATURE
        + bytes([ver_cmd, fam])
        + struct.pack(">H", len(body) if size is None else size)
        + body
    )


def inet(src: str, dst: str, sport: int, dport: int) -> bytes:
    return socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">HH", sport, dport)


def inet6(src: str, dst: str, sport: int, dport: int) -> bytes:
    pack = ipaddress.IPv6Address
    return pack(src).packed + pack(dst).packed + struct.pack(">HH", sport, dport)


FFFF6 = ":".join(["ffff"] * 8)

# (header bytes, the header they must parse to)
VECTORS: list[tuple[bytes, ProxyHeader]] = [
    (
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        ProxyHeader(1, PROXY, ("192.168.0.1", 56324), ("192.168.0.11", 443), 47),
    ),
    (
        b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        ProxyHeader(1, PROXY, ("255.255.255.255", 65535), ("255.255.255.255", 65535), 56),
    ),
    (
        f"PROXY TCP6 {FFFF6} {FFFF6} 65535 65535\r\n".encode(),  # the longest TCP6 line: 104
        ProxyHeader(1, PROXY, (FFFF6, 65535), (FFFF6, 65535), 104),
    ),
    (
        b"PROXY TCP6 2001:db8::1 ::1 0 22\r\n",
        ProxyHeader(1, PROXY, ("2001:db8::1", 0), ("::1", 22), 33),
    ),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, PROXY, None, None, 15)),
    (
        f"PROXY UNKNOWN {FFFF6} {FFFF6} 65535 65535\r\n".encode(),  # the longest v1 line: 107
        ProxyHeader(1, PROXY, None, None, V1_MAX),
    ),
    # v2, literally as the spec lays it out: TCP over IPv4, 127.0.0.1:54321 -> 127.0.0.1:22.
    (
        bytes.fromhex("0d0a0d0a000d0a515549540a2111000c7f0000017f000001d4310016"),
        ProxyHeader(2, PROXY, ("127.0.0.1", 54321), ("127.0.0.1", 22), 28),
    ),
    (
        v2(0x21, 0x11, inet("10.1.2.3", "10.0.0.1", 40000, 2222)),
        ProxyHeader(2, PROXY, ("10.1.2.3", 40000), ("10.0.0.1", 2222), 28),
    ),
    (
        v2(0x21, 0x21, inet6("2001:db8::7", "2001:db8::1", 1, 65535)),
        ProxyHeader(2, PROXY, ("2001:db8::7", 1), ("2001:db8::1", 65535), 52),
    ),
    # TLVs after the addresses (here: ALPN and a NOOP) are skipped.
    (
        v2(0x21, 0x11, inet("10.1.2.3", "10.0.0.1", 1, 2) + b"\x01\x00\x02h2" + b"\x04\x00\x00"),
        ProxyHeader(2, PROXY, ("10.1.2.3", 1), ("10.0.0.1", 2), 16 + 12 + 5 + 3),
    ),
    # LOCAL (a health check): the address block, if any, is ignored.
    (v2(0x20, 0x00, b""), ProxyHeader(2, LOCAL, None, None, 16)),
    (v2(0x20, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2)), ProxyHeader(2, LOCAL, None, None, 28)),
    (v2(0x20, 0x12, b"\x00" * 3), ProxyHeader(2, LOCAL, None, None, 19)),
    # PROXY over UNSPEC or a UNIX socket: no IP address to show, the connection's is kept.
    (v2(0x21, 0x00, b""), ProxyHeader(2, PROXY, None, None, 16)),
    (v2(0x21, 0x31, b"\x00" * 216), ProxyHeader(2, PROXY, None, None, 232)),
]


@pytest.mark.parametrize(("raw", "want"), VECTORS)
def test_vectors_parse_and_leave_the_ssh_bytes(raw: bytes, want: ProxyHeader) -> None:
    assert parse_header(raw) == want
    reader = HeaderReader()
    assert reader.feed(raw + BANNER) == want
    assert reader.rest == BANNER


@pytest.mark.parametrize(("raw", "want"), VECTORS)
def test_split_at_every_byte_boundary(raw: bytes, want: ProxyHeader) -> None:
    data = raw + BANNER
    for cut in range(1, len(data)):
        reader = HeaderReader()
        first = reader.feed(data[:cut])
        if cut < len(raw):
            assert first is None, cut
            assert reader.feed(data[cut:]) == want
            assert reader.rest == BANNER
        else:
            assert first == want
            assert reader.rest == data[len(raw) : cut]
    reader = HeaderReader()
    results = [reader.feed(data[i : i + 1]) for i in range(len(raw))]
    assert results[:-1] == [None] * (len(raw) - 1) and results[-1] == want
    assert reader.rest == b""


@pytest.mark.parametrize(("raw", "want"), VECTORS)
def test_every_truncation_needs_more_and_is_never_an_error(raw: bytes, want: ProxyHeader) -> None:
    for cut in range(len(raw)):
        assert parse_header(raw[:cut]) is None, cut


@pytest.mark.parametrize(
    "raw",
    [
        BANNER,  # a client that speaks SSH at once
        b"SSH-2.0-\r\n",
        b"GET / HTTP/1.1\r\n",
        b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n",
        b"PROXY\r\n",
        b"PROXY  TCP4 1.2.3.4 1.2.3.4 1 2\r\n",
        b"PROXYTCP4",
        b"\r\n\r\n\x00\r\nQUIX\n",
        b"\x00" * 20,
        b"\xff\xfe",
    ],
)
def test_garbage_is_refused_at_the_first_wrong_byte(raw: bytes) -> None:
    with pytest.raises(HeaderError) as err:
        HeaderReader().feed(raw)
    assert err.value.reason == "invalid"


@pytest.mark.parametrize(
    "line",
    [
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",  # no CR
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
        b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",  # the wrong family
        b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
        b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 0x1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 000001 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
        b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
        b"PROXY UNKNOWN \xc3\xa9\r\n",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 \x002\r\n",
    ],
)
def test_bad_v1_lines(line: bytes) -> None:
    with pytest.raises(HeaderError):
        parse_header(line + BANNER)


def test_v1_longer_than_107_bytes_is_refused_without_waiting_for_more() -> None:
    ok = b"PROXY UNKNOWN " + b"x" * (V1_MAX - 16) + b"\r\n"
    assert len(ok) == V1_MAX and parse_header(ok) is not None
    long = b"PROXY UNKNOWN " + b"x" * (V1_MAX - 15) + b"\r\n"
    with pytest.raises(HeaderError) as err:
        parse_header(long)
    assert err.value.reason == "too_long"
    # No line end in the first 107 bytes: refused at once, however much more would come.
    reader = HeaderReader()
    assert reader.feed(b"PROXY UNKNOWN " + b"x" * (V1_MAX - 15)) is None
    with pytest.raises(HeaderError, match="longer than 107"):
        reader.feed(b"x")
    with pytest.raises(HeaderError, match="longer than 107"):
        HeaderReader().feed(b"PROXY TCP4 " + b"1" * 1_000_000)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (v2(0x11, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2)), "version"),
        (v2(0x31, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2)), "version"),
        (v2(0x22, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2)), "command"),
        (v2(0x2F, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2)), "command"),
        (v2(0x21, 0x41, inet("1.2.3.4", "5.6.7.8", 1, 2)), "family"),
        (v2(0x21, 0x13, inet("1.2.3.4", "5.6.7.8", 1, 2)), "transport"),
        (v2(0x21, 0x12, inet("1.2.3.4", "5.6.7.8", 1, 2)), "UDP"),
        (v2(0x21, 0x10, inet("1.2.3.4", "5.6.7.8", 1, 2)), "transport unspec with INET"),
        (v2(0x21, 0x22, inet6("::1", "::1", 1, 2)), "UDP6"),
        (v2(0x21, 0x32, b"\x00" * 216), "UNIX datagram"),
        (v2(0x21, 0x11, inet("1.2.3.4", "5.6.7.8", 1, 2)[:11]), "short INET"),
        (v2(0x21, 0x21, inet6("::1", "::1", 1, 2)[:35]), "short INET6"),
        (v2(0x21, 0x21, inet("1.2.3.4", "5.6.7.8", 1, 2)), "INET6 with an INET block"),
    ],
)
def test_bad_v2_headers(raw: bytes, reason: str) -> None:
    with pytest.raises(HeaderError):
        parse_header(raw + BANNER)


def test_v2_length_is_bounded_before_the_bytes_arrive() -> None:
    body = inet("1.2.3.4", "5.6.7.8", 1, 2)
    assert parse_header(v2(0x21, 0x11, body + b"\x00" * (V2_MAX_BODY - 12))) is not None
    for size in (V2_MAX_BODY + 1, 0xFFFF):
        reader = HeaderReader()
        # Only the 16 fixed bytes: refused at once, nothing waits for 64 KiB.
        with pytest.raises(HeaderError) as err:
            reader.feed(v2(0x21, 0x11, b"", size=size))
        assert err.value.reason == "too_long"
    with pytest.raises(HeaderError):
        HeaderReader(max_v2=64).feed(v2(0x21, 0x11, body + b"\x00" * 60))


@given(st.binary(max_size=300))
def test_any_bytes_give_more_a_header_or_a_header_error(data: bytes) -> None:
    reader = HeaderReader()
    try:
        header = reader.feed(data)
    except HeaderError:
        return
    if header is None:
        assert len(data) < 16 + V2_MAX_BODY
    else:
        assert 0 < header.length <= len(data)
        assert reader.rest == data[header.length :]


@given(st.sampled_from([raw for raw, _ in VECTORS]), st.binary(max_size=64), st.data())
def test_random_splits_and_suffixes(raw: bytes, suffix: bytes, data: st.DataObject) -> None:
    stream = raw + suffix
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=8)))
    reader = HeaderReader()
    header = None
    start = 0
    for cut in [*cuts, len(stream)]:
        if header is None and start < cut:
            header = reader.feed(stream[start:cut])
            rest_at = cut
        start = cut
    assert header == parse_header(raw)
    assert reader.rest + stream[rest_at:] == suffix


# Who may send one --------------------------------------------------------------------------


def test_trusted_sources() -> None:
    nets = parse_networks(["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"])
    assert is_trusted("127.0.0.1", nets)
    assert is_trusted("10.200.3.4", nets)
    assert is_trusted("::1", nets)
    assert is_trusted("fd12::5", nets)
    assert is_trusted("::ffff:10.1.1.1", nets)  # an IPv4 peer on a dual-stack listener
    assert not is_trusted("127.0.0.2", nets)
    assert not is_trusted("11.0.0.1", nets)
    assert not is_trusted("fe80::1", nets)
    assert not is_trusted("", nets)
    assert not is_trusted("not-an-address", nets)
    assert not is_trusted("10.0.0.1", ())


def test_proxy_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SSHGW_PROXY_PROTOCOL", "SSHGW_PROXY_FROM", "SSHGW_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.proxy_protocol is False
    assert [str(n) for n in s.proxy_networks] == ["127.0.0.1/32", "::1/128"]
    monkeypatch.setenv("SSHGW_PROXY_PROTOCOL", "true")
    monkeypatch.setenv("SSHGW_PROXY_FROM", " 10.0.0.0/8, 192.168.1.7 ,2001:db8::/32")
    s = load_settings()
    assert s.proxy_protocol is True
    assert [str(n) for n in s.proxy_networks] == ["10.0.0.0/8", "192.168.1.7/32", "2001:db8::/32"]


@pytest.mark.parametrize("value", ["10.0.0.0/33", "gateway.example", "10.0.0.1,,x", "1.2.3.4/8/2"])
def test_proxy_from_is_validated_at_load(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.delenv("SSHGW_CONFIG", raising=False)
    monkeypatch.setenv("SSHGW_PROXY_FROM", value)
    with pytest.raises(InvalidInput, match="not an IP address or CIDR"):
        load_settings()


def test_proxy_protocol_without_trusted_sources_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSHGW_CONFIG", raising=False)
    monkeypatch.setenv("SSHGW_PROXY_PROTOCOL", "1")
    monkeypatch.setenv("SSHGW_PROXY_FROM", " , ")
    with pytest.raises(InvalidInput, match="names no address"):
        load_settings()


# The startup slot of a connection whose header is being read --------------------------------


def test_a_slot_moves_to_the_client_address_under_its_per_source_cap() -> None:
    gate = StartupGate(Startups(10, 100, 10), per_source=2, chance=lambda: 0.0)
    assert gate.enter("proxy-header#1") is None and gate.enter("proxy-header#2") is None
    assert gate.enter("proxy-header#3") is None
    assert gate.count == 3
    assert gate.move("proxy-header#1", "192.0.2.7") is None
    assert gate.move("proxy-header#2", "192.0.2.7") is None
    # A third connection of that client: refused under the client's cap, its slot freed.
    assert gate.move("proxy-header#3", "192.0.2.7") == "per_source"
    assert gate.count == 2 and gate.from_source("192.0.2.7") == 2
    assert gate.from_source("proxy-header#3") == 0
    gate.leave("192.0.2.7")
    gate.leave("192.0.2.7")
    assert gate.count == 0 and gate.sources == 0
