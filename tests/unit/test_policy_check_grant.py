"""Grant validation without a database: what may be stored, and in which normalized form."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import InvalidInput
from gateway.policy import ANY_LOGIN, check_grant, check_labels, check_logins, check_paths


def test_a_valid_grant_is_normalized() -> None:
    spec = check_grant(
        user="alice",
        target="  web*  ",
        labels={"env": "prod", "team": "a*"},
        rights="sftp-write, shell,shell",
        logins=[" app ", "", "1000:1000", "app", ANY_LOGIN],
        paths=["/srv/app/", "/srv//app", "/", "/data/./x/.."],
    )
    assert spec.user == "alice" and spec.group is None
    assert spec.target == "web*"
    assert spec.labels == (("env", "prod"), ("team", "a*"))
    assert spec.rights == frozenset({"shell", "sftp-write"})
    assert spec.logins == ("app", "1000:1000", ANY_LOGIN)
    assert spec.paths == ("/srv/app", "/", "/data")


def test_rights_as_a_list_and_labels_as_pairs() -> None:
    spec = check_grant(group="ops", target="*", labels=[("a", "1")], rights=["exec", "shell"])
    assert spec.group == "ops" and spec.user is None
    assert spec.labels == (("a", "1"),)
    assert spec.rights == frozenset({"exec", "shell"})
    assert spec.logins == () and spec.paths == ()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target": "*", "rights": "shell"}, "exactly one subject"),
        ({"user": "a", "group": "g", "target": "*", "rights": "shell"}, "exactly one subject"),
        ({"user": "a", "target": "  ", "rights": "shell"}, "needs a target"),
        ({"user": "a", "target": "web 1", "rights": "shell"}, "invalid target glob"),
        ({"user": "a", "target": "a/b", "rights": "shell"}, "invalid target glob"),
        ({"user": "a", "target": "a\x1b", "rights": "shell"}, "invalid target glob"),
        ({"user": "a", "target": "*", "rights": "fly"}, "unknown right"),
        ({"user": "a", "target": "*", "rights": " , "}, "no rights given"),
        ({"user": "a", "target": "*", "rights": "shell", "logins": ["a b"]}, "invalid login"),
        ({"user": "a", "target": "*", "rights": "shell", "paths": ["srv"]}, "must be absolute"),
        ({"user": "a", "target": "*", "rights": "shell", "paths": ["/a\nb"]}, "invalid path"),
        ({"user": "a", "target": "*", "rights": "shell", "paths": ["/a\0"]}, "invalid path"),
        (
            {"user": "a", "target": "*", "rights": "shell", "labels": {"a=b": "c"}},
            "invalid label key",
        ),
        (
            {"user": "a", "target": "*", "rights": "shell", "labels": {"": "c"}},
            "invalid label key",
        ),
        (
            {"user": "a", "target": "*", "rights": "shell", "labels": {"k": "\n"}},
            "invalid label value",
        ),
    ],
)
def test_invalid_grants_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        check_grant(**kwargs)


def test_a_label_given_twice() -> None:
    assert check_labels([("k", "v"), ("k", "v")]) == {"k": "v"}
    with pytest.raises(InvalidInput, match="given twice"):
        check_labels([("k", "v"), ("k", "w")])


def test_logins_and_paths_keep_order_and_drop_repeats() -> None:
    assert check_logins(["root", "0", "root", "www-data"]) == ("root", "0", "www-data")
    assert check_paths(["/b", "/a", "/b/"]) == ("/b", "/a")
