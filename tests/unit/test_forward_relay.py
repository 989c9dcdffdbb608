"""Where a forward may go in a container, and the relay's argv and marker (gateway.ssh.relay)."""

from __future__ import annotations

import pytest

from gateway.ssh.relay import (
    RELAY_SCRIPT,
    Dest,
    DestRefused,
    plan_dest,
    relay_argv,
    relay_failure,
    scan_relay_mark,
)

NAMES = ("web1", "web")
ADDRS = ("172.17.0.5", "fd00::5")


def plan(host: str, **kw: object) -> Dest:
    args: dict[str, object] = {"names": NAMES, "addresses": ADDRS, **kw}
    return plan_dest(host, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "127.0.0.1", "web1", "web"])
def test_the_container_by_name_or_loopback(host: str) -> None:
    assert plan(host) == Dest("127.0.0.1", ("172.17.0.5",))


def test_ipv6_loopback_and_own_addresses() -> None:
    assert plan("::1") == Dest("::1", ("172.17.0.5",))
    assert plan("[::1]") == Dest("::1", ("172.17.0.5",))
    assert plan("172.17.0.5") == Dest("172.17.0.5", ("172.17.0.5",))
    assert plan("fd00::5") == Dest("fd00::5", ("fd00::5",))


@pytest.mark.parametrize(
    "host",
    [
        "172.17.0.6",  # another container
        "172.17.0.1",  # the gateway host on the bridge
        "0.0.0.0",  # the gateway host itself
        "127.0.0.2",
        "127.1",
        "0x7f000001",
        "::ffff:127.0.0.1",
        "0:0:0:0:0:0:0:1",  # ::1 written another way: refused, only the exact forms
        "localhost.",
        "example.com",
        "web2",
        "",
        "172.017.0.5",
        "web1\n",
    ],
)
def test_anything_else_is_refused(host: str) -> None:
    with pytest.raises(DestRefused, match="only the container itself"):
        plan(host)


def test_host_and_shared_networks() -> None:
    with pytest.raises(DestRefused, match="host's network"):
        plan("localhost", network_mode="host")
    # Allowed by setting: relay only, its "addresses" are the host's.
    assert plan("localhost", network_mode="host", host_network=True) == Dest("127.0.0.1", ())
    with pytest.raises(DestRefused):
        plan("172.17.0.5", network_mode="host", host_network=True)
    with pytest.raises(DestRefused, match="another container's network"):
        plan("localhost", network_mode="container:abc", host_network=True)


def test_no_address_means_relay_only() -> None:
    assert plan_dest("localhost", names=NAMES, addresses=(), network_mode="none") == Dest(
        "127.0.0.1", ()
    )


def test_relay_argv_is_data() -> None:
    argv = relay_argv("127.0.0.1", 8080, "ab" * 16)
    assert argv == ["/bin/sh", "-c", RELAY_SCRIPT, "sshgw-relay", "127.0.0.1", "8080", "ab" * 16]
    for bad_host in ("localhost", "127.0.0.1; reboot", "$(id)"):
        with pytest.raises(ValueError):
            relay_argv(bad_host, 8080, "ab" * 16)
    for bad_port in (0, 65536, -1, True):
        with pytest.raises(ValueError):
            relay_argv("127.0.0.1", bad_port, "ab" * 16)


NONCE = "0123456789abcdef0123456789abcdef"


def test_relay_marker() -> None:
    head = b"\x1esshgw:" + NONCE.encode() + b":42\x1enc\n"
    mark = scan_relay_mark(head, NONCE)
    assert (mark.state, mark.pid, mark.tool) == ("found", 42, "nc")
    assert scan_relay_mark(head[:10], NONCE).state == "more"
    assert scan_relay_mark(head[:-1], NONCE).state == "more"  # the tool line is not complete
    assert scan_relay_mark(b"sh: not found\n", NONCE).state == "none"
    other = b"\x1esshgw:" + b"f" * 32 + b":42\x1enc\n"
    assert scan_relay_mark(other, NONCE).state != "found"  # another nonce
    assert scan_relay_mark(head.replace(b"nc", b"rm"), NONCE).state == "none"
    assert scan_relay_mark(head.replace(b":42", b":1"), NONCE).state == "none"  # never PID 1


def test_relay_failure_words() -> None:
    assert relay_failure(b"bash: connect: Connection refused\n", b"") == "connection refused"
    oci = b'OCI runtime exec failed: exec: "/bin/sh": stat /bin/sh: no such file or directory'
    assert relay_failure(b"", oci) == "no shell (/bin/sh) in the container to start a relay"
    assert relay_failure(b"", b"") == "the relay ended at once"


def test_unroutable_addresses_are_skipped_for_a_while(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.ssh import forward

    now = [100.0]
    monkeypatch.setattr(forward.time, "monotonic", lambda: now[0])
    u = forward.Unroutable(ttl=10, size=2)
    u.add("172.18.0.2")
    assert u.holds("172.18.0.2") and not u.holds("172.18.0.3")
    now[0] = 111.0
    assert not u.holds("172.18.0.2")  # tried again after the ttl
    for addr in ("a", "b", "c"):
        u.add(addr)
    assert not u.holds("a") and u.holds("b") and u.holds("c")  # bounded: the oldest goes
