"""Limits for unauthenticated peers (gateway.ssh.limits): pure, clock and dice injected."""

from __future__ import annotations

import pytest

from gateway.config import load_settings
from gateway.errors import InvalidInput
from gateway.ssh.limits import (
    AuthTries,
    FailureDigest,
    FailureThrottle,
    StartupGate,
    Startups,
    parse_max_startups,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- max_startups ----------------------------------------------------------------------------


def test_parse_max_startups() -> None:
    assert parse_max_startups("100:30:300") == Startups(100, 30, 300)
    assert parse_max_startups(" 10:0:10 ") == Startups(10, 0, 10)
    assert parse_max_startups("7") == Startups(7, 100, 7)  # like OpenSSH: N means N:100:N


@pytest.mark.parametrize(
    "text",
    ["", "x", "1:2", "1:2:3:4", "10:30:5", "0:30:10", "10:101:20", "10:-1:20", "-3", "1.5"],
)
def test_parse_max_startups_refuses_bad_values_in_one_line(text: str) -> None:
    with pytest.raises(InvalidInput) as err:
        parse_max_startups(text)
    assert "max_startups" in err.value.user_message
    assert "\n" not in err.value.user_message


def test_settings_check_limits_at_load() -> None:
    assert load_settings(max_startups="5:50:10").max_startups == "5:50:10"
    for bad in (
        {"max_startups": "10:30:5"},
        {"max_auth_tries": 0},
        {"max_sessions": 0},
        {"max_password_checks": 0},
        {"max_startups_per_source": 0},
        {"server_version": "sshgw 1.0"},
        {"server_version": "ssh-gw"},
    ):
        with pytest.raises(InvalidInput) as err:
            load_settings(**bad)
        msg = err.value.user_message
        assert "\n" not in msg and next(iter(bad)) in msg, msg


class Dice:
    """``chance()`` returns the queued values in turn."""

    def __init__(self, *values: float) -> None:
        self.values = list(values)

    def __call__(self) -> float:
        return self.values.pop(0)


def test_gate_accepts_below_start_and_refuses_at_full() -> None:
    gate = StartupGate(Startups(2, 50, 4), per_source=100, chance=Dice())
    assert gate.enter("a") is None and gate.enter("b") is None  # below start: no dice thrown
    assert gate.count == 2
    gate.count = 4
    assert gate.enter("c") == "startups"  # at full: all refused, no dice thrown
    assert gate.count == 4


def test_gate_between_start_and_full_refuses_with_rising_probability() -> None:
    # 10:30:20: at 10 refuse 30 %, at 15 refuse 65 %, at 19 refuse 93 %.
    gate = StartupGate(Startups(10, 30, 20), per_source=1000, chance=Dice(0.29, 0.31))
    gate.count = 10
    assert gate.refusal("x") == "startups"  # 29 < 30
    assert gate.refusal("x") is None  # 31 >= 30
    gate = StartupGate(Startups(10, 30, 20), per_source=1000, chance=Dice(0.64, 0.66, 0.92, 0.94))
    gate.count = 15
    assert gate.refusal("x") == "startups"
    assert gate.refusal("x") is None
    gate.count = 19
    assert gate.refusal("x") == "startups"
    assert gate.refusal("x") is None


def test_gate_rate_statistics_with_real_dice() -> None:
    import random

    rnd = random.Random(7)
    gate = StartupGate(Startups(10, 30, 20), per_source=1000, chance=rnd.random)
    gate.count = 10
    refused = sum(gate.refusal("x") is not None for _ in range(4000))
    assert 0.25 < refused / 4000 < 0.35


def test_gate_bare_number_refuses_all_at_n() -> None:
    gate = StartupGate(parse_max_startups("3"), per_source=10, chance=Dice())
    assert [gate.enter(str(i)) for i in range(4)] == [None, None, None, "startups"]


def test_gate_per_source_cap_and_release() -> None:
    gate = StartupGate(Startups(100, 30, 300), per_source=2, chance=Dice())
    assert gate.enter("10.0.0.1") is None
    assert gate.enter("10.0.0.1") is None
    assert gate.enter("10.0.0.1") == "per_source"
    assert gate.enter("10.0.0.2") is None  # another source is not affected
    assert gate.count == 3 and gate.from_source("10.0.0.1") == 2
    gate.leave("10.0.0.1")
    assert gate.enter("10.0.0.1") is None
    for _ in range(5):  # leaving more often than entering never goes below zero
        gate.leave("10.0.0.1")
        gate.leave("10.0.0.2")
    assert gate.count == 0 and gate.sources == 0


def test_gate_per_source_is_reported_before_startups() -> None:
    gate = StartupGate(Startups(1, 100, 1), per_source=1, chance=Dice())
    assert gate.enter("a") is None
    assert gate.enter("a") == "per_source"
    assert gate.enter("b") == "startups"


# --- max_auth_tries ---------------------------------------------------------------------------


def test_auth_tries_passwords() -> None:
    t = AuthTries(3)
    assert t.failure() is False  # the first "none" request is free
    for _ in range(2):
        assert t.password() is True
        assert t.failure() is False
    assert t.password() is True
    assert t.failure() is True  # the third failed password reaches the limit
    assert t.password() is False  # and no further check starts


def test_auth_tries_a_key_counts_once() -> None:
    t = AuthTries(3)
    for _ in range(5):  # the same rejected key asked about again and again
        t.key("SHA256:a", accepted=False)
        assert t.failure() is False
    assert t.failures == 1
    t.key("SHA256:b", accepted=False)
    assert t.failure() is False
    t.key("SHA256:c", accepted=False)
    assert t.failure() is True


def test_auth_tries_accepted_key_with_bad_signature_counts() -> None:
    t = AuthTries(2)
    t.key("SHA256:mine", accepted=True)  # the query: PK_OK, no failure answer
    t.key("SHA256:mine", accepted=True)  # the signed attempt, signature wrong
    assert t.failure() is False
    t.key("SHA256:mine", accepted=True)
    assert t.failure() is True


def test_auth_tries_requests_without_check_count_after_the_first() -> None:
    t = AuthTries(2)
    assert t.failure() is False  # "none"
    assert t.failure() is False  # an unsupported method
    assert t.failure() is True


def test_auth_tries_replaced_password_checks_still_count() -> None:
    t = AuthTries(2)
    assert t.password() is True  # cancelled by the next request: no failure answer
    assert t.password() is True
    assert t.password() is False


# --- failure throttle -------------------------------------------------------------------------


def test_throttle_grows_and_caps() -> None:
    clock = Clock()
    th = FailureThrottle(free=2, base=0.5, cap=4.0, clock=clock)
    delays = []
    for _ in range(8):
        delays.append(th.delay("src", "user"))
        th.failed("src", "user")
    assert delays == [0.0, 0.0, 0.0, 0.5, 1.0, 2.0, 4.0, 4.0]


def test_throttle_takes_the_largest_key() -> None:
    th = FailureThrottle(free=0, base=1.0, cap=8.0, clock=Clock())
    for _ in range(3):
        th.failed(("src", "a"))
    th.failed(("user", "alice"))
    assert th.delay(("src", "a"), ("user", "alice")) == 4.0
    assert th.delay(("src", "b"), ("user", "alice")) == 1.0
    assert th.delay(("src", "b"), ("user", "bob")) == 0.0


def test_throttle_forgets_after_quiet_period() -> None:
    clock = Clock()
    th = FailureThrottle(free=0, base=1.0, cap=8.0, forget=60.0, clock=clock)
    th.failed("k")
    th.failed("k")
    assert th.delay("k") == 2.0
    clock.now += 59
    assert th.delay("k") == 2.0
    th.failed("k")  # a failure restarts the quiet period
    clock.now += 59
    assert th.delay("k") == 4.0
    clock.now += 60
    assert th.delay("k") == 0.0
    assert len(th) == 0


def test_throttle_memory_is_bounded_oldest_first() -> None:
    clock = Clock()
    th = FailureThrottle(free=0, base=1.0, cap=8.0, max_keys=100, clock=clock)
    th.failed("old")
    for i in range(1000):
        clock.now += 0.001
        th.failed(f"k{i}")
    assert len(th) == 100
    assert th.delay("old") == 0.0  # evicted
    assert th.delay("k999") == 1.0


def test_throttle_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError):
        FailureThrottle(base=0)
    with pytest.raises(ValueError):
        FailureThrottle(base=2.0, cap=1.0)


# --- audit digest -----------------------------------------------------------------------------


def test_digest_writes_a_few_then_sums_per_window() -> None:
    clock = Clock()
    dg = FailureDigest(direct=2, window=60.0, clock=clock)
    assert dg.admit("1.2.3.4", "alice", "password") == (True, [])
    assert dg.admit("1.2.3.4", "alice", "password") == (True, [])
    for i in range(10):
        write, due = dg.admit("1.2.3.4", f"u{i % 3}", "password", count=2)
        assert (write, due) == (False, [])
    assert dg.admit("5.6.7.8", "bob", "publickey") == (True, [])  # another source: its own budget
    assert dg.next_due() == 1060.0
    clock.now += 30
    assert dg.due() == []
    clock.now += 30
    (d,) = dg.due()
    assert d.source == "1.2.3.4" and d.count == 20
    assert d.users == ["u0", "u1", "u2"] and d.methods == {"password"}
    assert dg.next_due() is None
    # A new window for the source: direct events again.
    assert dg.admit("1.2.3.4", "alice", "password") == (True, [])


def test_digest_due_is_also_handed_out_on_admit() -> None:
    clock = Clock()
    dg = FailureDigest(direct=0, window=10.0, clock=clock)
    assert dg.admit("a", "x", "password") == (False, [])
    clock.now += 11
    write, due = dg.admit("b", "y", "password")
    assert write is False and [d.source for d in due] == ["a"]


def test_digest_drain_and_bounds() -> None:
    clock = Clock()
    dg = FailureDigest(direct=0, window=60.0, max_users=2, max_sources=3, clock=clock)
    for i in range(5):
        for u in ("a", "b", "c", "d"):
            _, evicted = dg.admit(f"s{i}", u, "password")
            if i < 3:
                assert evicted == []
        clock.now += 1
    assert len(dg) == 3
    left = dg.drain()
    assert [d.source for d in left] == ["s2", "s3", "s4"]
    assert all(d.count == 4 and d.users == ["a", "b"] for d in left)
    assert len(dg) == 0 and dg.drain() == []


def test_digest_eviction_hands_out_the_oldest() -> None:
    clock = Clock()
    dg = FailureDigest(direct=0, window=60.0, max_sources=2, clock=clock)
    dg.admit("s0", "a", "password", count=5)
    dg.admit("s1", "a", "password")
    _, evicted = dg.admit("s2", "a", "password")
    assert [(d.source, d.count) for d in evicted] == [("s0", 5)]
