"""The pure parts of many engines: the CONTAINER.ENGINE split, the container directory and its
events, ambiguity shown only where a grant reaches, the listing's qualified names."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.engines.base import AmbiguousContainer, Container
from gateway.engines.directory import MAX_LABEL_BYTES, Directory, Event, parse_event
from gateway.errors import NoSuchContainer
from gateway.policy import Grant, Subject
from gateway.routing import parse_login, split_qualified
from gateway.ssh.listing import listing_rows

ID1 = "a" * 63 + "1"
ID2 = "a" * 63 + "2"
ID3 = "b" * 64


def c(cid: str, name: str, state: str = "running", engine: str = "", **labels: str) -> Container:
    return Container(cid, name, "busybox:1", state, labels, engine=engine)


# routing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "split"),
    [
        ("web1.host2", ("web1", "host2")),
        ("my.app.host-2", ("my.app", "host-2")),  # split at the last dot
        ("web1", None),
        ("web1.", None),
        (".host2", None),
        ("web1.Host2", None),  # engine names are lower case
        ("web1.host_2", None),
        ("web1.h" + "x" * 63, None),  # too long for an engine name
        ("-x.host2", None),
    ],
)
def test_split_qualified(ref: str, split: tuple[str, str] | None) -> None:
    assert split_qualified(ref) == split


@pytest.mark.parametrize(
    ("raw", "container", "login"),
    [
        ("alice+web1.host2", "web1.host2", None),
        ("alice+web1.host2+root", "web1.host2", "root"),
        ("alice+my.app.host2+app", "my.app.host2", "app"),
    ],
)
def test_qualified_logins_parse(raw: str, container: str, login: str | None) -> None:
    t = parse_login(raw)
    assert (t.user, t.container, t.login) == ("alice", container, login)


# directory -------------------------------------------------------------------------------------


def test_find_by_name_id_and_prefix() -> None:
    d = Directory("h1", 10)
    d.replace_all([c(ID1, "web1"), c(ID2, "web2"), c(ID3, "db")])
    assert [x.name for x in d.find("web1")] == ["web1"]
    assert d.find("web1")[0].engine == "h1"  # the directory's engine is set
    assert [x.name for x in d.find(ID3)] == ["db"]
    assert [x.name for x in d.find("bbbb")] == ["db"]
    assert len(d.find("aaaa")) == 2  # an ambiguous prefix
    assert d.find("bbb") == []  # at least four digits
    assert d.find("nope") == []


def test_events_create_rename_state_destroy() -> None:
    d = Directory("h1", 10)
    d.replace_all([])
    assert d.apply(Event("create", ID1, "web1", "busybox")) is True  # read it afresh
    assert d.find("web1")[0].state == "created"
    assert d.apply(Event("start", ID1, "web1")) is False
    assert d.find("web1")[0].state == "running"
    d.apply(Event("rename", ID1, "web9"))
    assert d.find("web1") == [] and d.find("web9")[0].id == ID1
    d.apply(Event("die", ID1, "web9"))
    assert d.find("web9")[0].state == "exited"
    d.apply(Event("destroy", ID1, "web9"))
    assert d.find("web9") == [] and len(d) == 0


def test_a_new_name_taken_by_another_container_is_kept_apart() -> None:
    d = Directory("h1", 10)
    d.replace_all([c(ID1, "web1")])
    d.apply(Event("rename", ID1, "old"))
    d.apply(Event("create", ID2, "web1"))
    d.apply(Event("destroy", ID1))
    assert d.find("web1")[0].id == ID2


def test_directory_is_bounded() -> None:
    d = Directory("h1", 2)
    d.replace_all([c(ID1, "a"), c(ID2, "b"), c(ID3, "c")])
    assert len(d) == 2 and d.overflow
    d.apply(Event("create", "c" * 64, "d"))
    assert len(d) == 2
    big = {f"k{i}": "v" * 1000 for i in range(100)}
    d.replace_all([c(ID1, "a", **big)])
    labels = d.find("a")[0].labels
    assert sum(len(k) + len(v) for k, v in labels.items()) <= MAX_LABEL_BYTES


@pytest.mark.parametrize(
    ("data", "event"),
    [
        (
            {
                "Type": "container",
                "Action": "start",
                "Actor": {"ID": ID1, "Attributes": {"name": "w"}},
            },
            Event("start", ID1, "w"),
        ),
        ({"Type": "container", "Action": "exec_start: sh", "Actor": {"ID": ID1}}, None),
        ({"Type": "network", "Action": "connect", "Actor": {"ID": ID1}}, None),
        ({"Type": "container", "Action": "start", "Actor": {"ID": "../x"}}, None),
        ({"Type": "container", "Action": "health_status: healthy", "Actor": {"ID": ID1}}, None),
        ({}, None),
    ],
)
def test_parse_event(data: dict[str, object], event: Event | None) -> None:
    assert parse_event(data) == event


# ambiguity and listing -------------------------------------------------------------------------


def test_ambiguity_shows_as_no_such_container_until_narrowed() -> None:
    cands = [c(ID1, "dup", engine="h1"), c(ID2, "dup", engine="h2")]
    err = AmbiguousContainer("dup", cands)
    assert isinstance(err, NoSuchContainer)
    assert "h1" not in err.user_message and "h2" not in err.user_message
    assert err.naming([]).user_message == NoSuchContainer("dup").user_message
    one = err.naming(cands[1:]).user_message
    assert "h2" in one and "h1" not in one and "dup.ENGINE" in one and "\n" not in one
    assert "h1, h2" in err.naming(cands).user_message


def test_listing_qualifies_names_found_on_several_engines() -> None:
    grants = [Grant(1, "*", frozenset({"shell"}), user="alice")]
    rows = listing_rows(
        Subject("alice"),
        grants,
        [c(ID1, "dup", engine="h1"), c(ID2, "dup", engine="h2"), c(ID3, "solo", engine="h2")],
    )
    assert [r[0] for r in rows] == ["dup.h1", "dup.h2", "solo"]
    one_engine = [dataclasses.replace(x, engine="") for x in (c(ID1, "a"), c(ID2, "b"))]
    assert [r[0] for r in listing_rows(Subject("alice"), grants, one_engine)] == ["a", "b"]
