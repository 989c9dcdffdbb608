"""Grants naming engines (``grant add --engine GLOB``): which containers they match, validation."""

from __future__ import annotations

import pytest

from gateway.errors import InvalidInput
from gateway.policy import Grant, Subject, Target, access, check_grant, decide

ALICE = Subject("alice")


def grant(engine: str = "*", target: str = "web*") -> Grant:
    return Grant(1, target, frozenset({"shell"}), user="alice", engine=engine)


@pytest.mark.parametrize(
    ("glob", "engine", "ok"),
    [
        ("*", "", True),  # the local default engine (no engine configured)
        ("*", "host2", True),
        ("host2", "host2", True),
        ("host2", "host1", False),
        ("host2", "", False),  # a grant naming an engine never reaches the default one
        ("host*", "host12", True),
        ("host[12]", "host3", False),
        ("host?", "host1", True),
    ],
)
def test_engine_glob(glob: str, engine: str, ok: bool) -> None:
    target = Target("web1", "abc", {}, engine)
    assert decide(ALICE, [grant(glob)], target, "shell").allowed is ok
    assert (access(ALICE, [grant(glob)], target) is not None) is ok


def test_engine_and_name_both_required() -> None:
    assert not decide(
        ALICE, [grant("host1", "db*")], Target("web1", engine="host1"), "shell"
    ).allowed


def test_describe_names_the_engine_when_not_any() -> None:
    assert "on engine host*" in grant("host*").describe()
    assert "engine" not in grant().describe()


@pytest.mark.parametrize("glob", ["host*", "h-1", "*", "host[12]", " host1 "])
def test_valid_engine_globs(glob: str) -> None:
    spec = check_grant(user="alice", target="*", rights="shell", engine=glob)
    assert spec.engine == glob.strip()


@pytest.mark.parametrize("glob", ["", "Host1", "host.1", "host/1", "h 1", "x" * 64, "é"])
def test_bad_engine_globs_are_one_line(glob: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        check_grant(user="alice", target="*", rights="shell", engine=glob)
    assert "\n" not in exc.value.user_message and "--engine" in exc.value.user_message


def test_default_is_any_engine() -> None:
    assert check_grant(user="alice", target="*", rights="shell").engine == "*"
