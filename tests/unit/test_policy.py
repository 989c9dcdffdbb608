"""Grants to decisions: deny by default, subjects, globs, labels, rights, logins, expiry, paths."""

from __future__ import annotations

import posixpath
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy import (
    ANY_LOGIN,
    IMAGE_USER,
    KNOWN_RIGHTS,
    Access,
    Grant,
    Right,
    Subject,
    Target,
    access,
    decide,
    decide_as,
    default_login,
    is_expired,
    normalize_prefix,
    parse_rights,
    path_allowed,
)
from gateway.vocab import DenyReason

NOW = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)
ALICE = Subject("alice")
BOB = Subject("bob", frozenset({"ops"}))
WEB1 = Target("web1", "abc123", {"env": "prod", "team": "blue"})
DB1 = Target("db1", "def456", {"env": "prod"})


def g(
    id: int = 1,
    target: str = "*",
    rights: str = "shell,exec",
    user: str | None = "alice",
    group: str | None = None,
    labels: tuple[tuple[str, str], ...] = (),
    logins: tuple[str, ...] = ("app",),
    paths: tuple[str, ...] = (),
    expires_at: datetime | None = None,
    record: bool = True,
) -> Grant:
    return Grant(
        id=id,
        target=target,
        rights=frozenset(rights.split(",")) if rights else frozenset(),
        user=user if group is None else None,
        group=group,
        labels=labels,
        logins=logins,
        paths=paths,
        expires_at=expires_at,
        record=record,
    )


# --- deny by default ---------------------------------------------------------------------------


def test_no_grants_denies() -> None:
    d = decide(ALICE, [], WEB1, "shell", now=NOW)
    assert not d.allowed
    assert d.reason is DenyReason.NO_GRANT
    assert d.grant is None
    assert d.login is None
    assert "no grant" in d.message
    assert "alice" in d.message and "web1" in d.message


@pytest.mark.parametrize("right", [r.value for r in Right])
def test_no_grants_denies_every_right(right: str) -> None:
    assert not decide(ALICE, [], WEB1, right, now=NOW).allowed


def test_unknown_right_is_denied() -> None:
    d = decide(ALICE, [g(rights="shell,exec")], WEB1, "admin", now=NOW)
    assert not d.allowed
    assert d.reason is DenyReason.RIGHT_MISSING


def test_access_without_grants_is_none() -> None:
    assert access(ALICE, [], WEB1, now=NOW) is None


# --- subjects ----------------------------------------------------------------------------------


def test_user_grant_applies_only_to_that_user() -> None:
    grants = [g(user="alice")]
    assert decide(ALICE, grants, WEB1, "shell", now=NOW).allowed
    d = decide(Subject("mallory"), grants, WEB1, "shell", now=NOW)
    assert not d.allowed and d.reason is DenyReason.NO_GRANT


def test_user_grant_is_exact_not_prefix_or_case_insensitive() -> None:
    grants = [g(user="alice")]
    for name in ("alic", "alice2", "Alice", "ALICE", "alice ", ""):
        assert not decide(Subject(name), grants, WEB1, "shell", now=NOW).allowed, name


def test_group_grant_applies_to_members() -> None:
    grants = [g(group="ops")]
    assert decide(BOB, grants, WEB1, "shell", now=NOW).allowed
    assert not decide(ALICE, grants, WEB1, "shell", now=NOW).allowed
    assert not decide(Subject("carol", frozenset({"dev"})), grants, WEB1, "shell", now=NOW).allowed


def test_group_grant_does_not_match_user_of_same_name() -> None:
    grants = [g(group="alice")]
    assert not decide(Subject("alice"), grants, WEB1, "shell", now=NOW).allowed
    assert decide(Subject("x", frozenset({"alice"})), grants, WEB1, "shell", now=NOW).allowed


def test_user_grant_does_not_match_group_of_same_name() -> None:
    grants = [g(user="ops")]
    assert not decide(BOB, grants, WEB1, "shell", now=NOW).allowed


def test_group_message_names_groups() -> None:
    d = decide(BOB, [], WEB1, "shell", now=NOW)
    assert "ops" in d.message


def test_grant_subject_text() -> None:
    assert g(user="alice").subject == "user alice"
    assert g(group="ops").subject == "group ops"


# --- targets: globs and labels ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "name", "ok"),
    [
        ("*", "web1", True),
        ("web1", "web1", True),
        ("web1", "web10", False),
        ("web1", "xweb1", False),
        ("web*", "web1", True),
        ("web*", "web", True),
        ("web*", "db1", False),
        ("web?", "web1", True),
        ("web?", "web12", False),
        ("web[12]", "web2", True),
        ("web[12]", "web3", False),
        ("Web1", "web1", False),  # case-sensitive like Docker names
        ("*-prod", "shop-prod", True),
        ("*-prod", "shop-prod-old", False),
        ("web1", "/web1", True),  # Docker API names carry a leading slash
    ],
)
def test_target_glob(glob: str, name: str, ok: bool) -> None:
    d = decide(ALICE, [g(target=glob)], Target(name), "shell", now=NOW)
    assert d.allowed is ok
    if not ok:
        assert d.reason is DenyReason.NO_GRANT


def test_labels_all_must_match() -> None:
    both = g(labels=(("env", "prod"), ("team", "blue")))
    assert decide(ALICE, [both], WEB1, "shell", now=NOW).allowed
    # db1 has env=prod but no team label
    assert not decide(ALICE, [both], DB1, "shell", now=NOW).allowed
    wrong = g(labels=(("env", "prod"), ("team", "red")))
    assert not decide(ALICE, [wrong], WEB1, "shell", now=NOW).allowed


def test_label_value_and_missing_label() -> None:
    assert not decide(ALICE, [g(labels=(("env", "staging"),))], WEB1, "shell", now=NOW).allowed
    assert not decide(ALICE, [g(labels=(("owner", "x"),))], WEB1, "shell", now=NOW).allowed
    assert not decide(
        ALICE, [g(labels=(("env", "prod"),))], Target("web1"), "shell", now=NOW
    ).allowed
    # empty string value must match exactly an empty value, not a missing label
    assert not decide(ALICE, [g(labels=(("owner", ""),))], WEB1, "shell", now=NOW).allowed
    t = Target("x", labels={"owner": ""})
    assert decide(ALICE, [g(labels=(("owner", ""),))], t, "shell", now=NOW).allowed


def test_label_key_is_exact() -> None:
    assert not decide(ALICE, [g(labels=(("ENV", "prod"),))], WEB1, "shell", now=NOW).allowed
    assert not decide(ALICE, [g(labels=(("en", "prod"),))], WEB1, "shell", now=NOW).allowed


def test_labels_and_glob_both_required() -> None:
    grant = g(target="db*", labels=(("env", "prod"),))
    assert not decide(ALICE, [grant], WEB1, "shell", now=NOW).allowed
    assert decide(ALICE, [grant], DB1, "shell", now=NOW).allowed


# --- rights -----------------------------------------------------------------------------------


def test_right_missing() -> None:
    grants = [g(rights="exec")]
    assert decide(ALICE, grants, WEB1, "exec", now=NOW).allowed
    d = decide(ALICE, grants, WEB1, "shell", now=NOW)
    assert not d.allowed
    assert d.reason is DenyReason.RIGHT_MISSING
    assert d.right == "shell"
    assert "'shell'" in d.message
    assert "grant #1" in d.message  # names the grant that matched


def test_rights_combine_over_grants() -> None:
    grants = [g(id=1, rights="exec", logins=("a",)), g(id=2, rights="shell", logins=("b",))]
    d = decide(ALICE, grants, WEB1, "shell", now=NOW)
    assert d.allowed and d.grant is not None and d.grant.id == 2 and d.login == "b"
    d = decide(ALICE, grants, WEB1, "exec", now=NOW)
    assert d.allowed and d.grant is not None and d.grant.id == 1 and d.login == "a"


def test_empty_rights_grant_gives_nothing() -> None:
    d = decide(ALICE, [g(rights="")], WEB1, "shell", now=NOW)
    assert not d.allowed and d.reason is DenyReason.RIGHT_MISSING
    assert access(ALICE, [g(rights="")], WEB1, now=NOW) is None


# --- logins -----------------------------------------------------------------------------------


def test_default_login_is_first_login_of_deciding_grant() -> None:
    d = decide(ALICE, [g(logins=("www-data", "root"))], WEB1, "shell", now=NOW)
    assert d.allowed and d.login == "www-data"


def test_default_login_comes_from_lowest_id_grant_with_the_right() -> None:
    grants = [
        g(id=5, logins=("five",)),
        g(id=2, rights="exec", logins=("two",)),
        g(id=3, logins=("three",)),
    ]
    d = decide(ALICE, grants, WEB1, "shell", now=NOW)
    assert d.login == "three" and d.grant is not None and d.grant.id == 3
    assert "grant #3" in d.message
    d = decide(ALICE, grants, WEB1, "exec", now=NOW)
    assert d.login == "two" and d.grant is not None and d.grant.id == 2


def test_star_logins_means_image_user() -> None:
    d = decide(ALICE, [g(logins=(ANY_LOGIN,))], WEB1, "shell", now=NOW)
    assert d.allowed and d.login is None
    assert "image" in d.message


def test_no_logins_means_image_user() -> None:
    d = decide(ALICE, [g(logins=())], WEB1, "shell", now=NOW)
    assert d.allowed and d.login is None


def test_no_logins_denies_a_named_login() -> None:
    d = decide(ALICE, [g(logins=())], WEB1, "shell", login="root", now=NOW)
    assert not d.allowed and d.reason is DenyReason.LOGIN_NOT_ALLOWED


def test_star_allows_any_requested_login() -> None:
    for login in ("root", "app", "0", "1000:1000"):
        d = decide(ALICE, [g(logins=(ANY_LOGIN,))], WEB1, "shell", login=login, now=NOW)
        assert d.allowed and d.login == login


def test_star_after_named_logins_defaults_to_first() -> None:
    d = decide(ALICE, [g(logins=("app", ANY_LOGIN))], WEB1, "shell", now=NOW)
    assert d.login == "app"
    d = decide(ALICE, [g(logins=("app", ANY_LOGIN))], WEB1, "shell", login="root", now=NOW)
    assert d.allowed and d.login == "root"


def test_requested_login_allowed() -> None:
    d = decide(ALICE, [g(logins=("app", "www-data"))], WEB1, "exec", login="www-data", now=NOW)
    assert d.allowed and d.login == "www-data"


def test_requested_login_not_allowed() -> None:
    d = decide(ALICE, [g(logins=("app",))], WEB1, "shell", login="root", now=NOW)
    assert not d.allowed
    assert d.reason is DenyReason.LOGIN_NOT_ALLOWED
    assert d.login is None
    assert "'root'" in d.message and "grant #1" in d.message


def test_requested_login_must_match_exactly() -> None:
    grants = [g(logins=("app",))]
    for login in ("App", "app ", "ap", "apps", "0", "1000"):
        assert not decide(ALICE, grants, WEB1, "shell", login=login, now=NOW).allowed, login


def test_requested_login_picks_the_grant_that_allows_it() -> None:
    grants = [g(id=1, logins=("app",)), g(id=2, logins=("root",))]
    d = decide(ALICE, grants, WEB1, "shell", login="root", now=NOW)
    assert d.allowed and d.grant is not None and d.grant.id == 2
    assert "grant #2" in d.message


def test_login_allowed_only_by_grant_without_the_right_is_denied() -> None:
    grants = [g(id=1, rights="shell", logins=("app",)), g(id=2, rights="exec", logins=("root",))]
    d = decide(ALICE, grants, WEB1, "shell", login="root", now=NOW)
    assert not d.allowed and d.reason is DenyReason.LOGIN_NOT_ALLOWED


def test_default_login_helper() -> None:
    assert default_login(g(logins=("a", "b"))) == "a"
    assert default_login(g(logins=(ANY_LOGIN, "b"))) is None
    assert default_login(g(logins=())) is None


# --- expiry -----------------------------------------------------------------------------------


def test_expired_grant_denies() -> None:
    d = decide(ALICE, [g(expires_at=NOW - timedelta(seconds=1))], WEB1, "shell", now=NOW)
    assert not d.allowed
    assert d.reason is DenyReason.EXPIRED
    assert "expired" in d.message and "grant #1" in d.message


def test_expiry_boundary() -> None:
    assert not decide(ALICE, [g(expires_at=NOW)], WEB1, "shell", now=NOW).allowed
    assert decide(ALICE, [g(expires_at=NOW + timedelta(seconds=1))], WEB1, "shell", now=NOW).allowed


def test_expiry_naive_and_aware_mix() -> None:
    naive_past = datetime(2030, 6, 1, 11, 0)
    naive_future = datetime(2030, 6, 1, 13, 0)
    naive_now = datetime(2030, 6, 1, 12, 0)
    # naive expiry, aware now
    assert not decide(ALICE, [g(expires_at=naive_past)], WEB1, "shell", now=NOW).allowed
    assert decide(ALICE, [g(expires_at=naive_future)], WEB1, "shell", now=NOW).allowed
    # aware expiry, naive now
    assert not decide(
        ALICE, [g(expires_at=NOW - timedelta(hours=1))], WEB1, "shell", now=naive_now
    ).allowed
    assert decide(
        ALICE, [g(expires_at=NOW + timedelta(hours=1))], WEB1, "shell", now=naive_now
    ).allowed
    # both naive
    assert not decide(ALICE, [g(expires_at=naive_past)], WEB1, "shell", now=naive_now).allowed
    # access() must not raise on the mix either
    assert access(ALICE, [g(expires_at=naive_past)], WEB1, now=NOW) is None
    assert access(ALICE, [g(expires_at=naive_future)], WEB1, now=NOW) is not None


def test_expiry_other_timezone() -> None:
    plus2 = timezone(timedelta(hours=2))
    # 13:30 at +02:00 is 11:30 UTC: already past at 12:00 UTC
    exp = datetime(2030, 6, 1, 13, 30, tzinfo=plus2)
    assert is_expired(g(expires_at=exp), NOW)
    assert not decide(ALICE, [g(expires_at=exp)], WEB1, "shell", now=NOW).allowed
    exp2 = datetime(2030, 6, 1, 14, 30, tzinfo=plus2)  # 12:30 UTC
    assert decide(ALICE, [g(expires_at=exp2)], WEB1, "shell", now=NOW).allowed


def test_expired_grant_does_not_shadow_live_one() -> None:
    grants = [
        g(id=1, logins=("old",), expires_at=NOW - timedelta(days=1)),
        g(id=2, logins=("new",)),
    ]
    d = decide(ALICE, grants, WEB1, "shell", now=NOW)
    assert d.allowed and d.login == "new" and d.grant is not None and d.grant.id == 2
    d = decide(ALICE, grants, WEB1, "shell", login="old", now=NOW)
    assert not d.allowed


def test_default_now_is_current_time() -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    future = datetime.now(UTC) + timedelta(days=1)
    assert not decide(ALICE, [g(expires_at=past)], WEB1, "shell").allowed
    assert decide(ALICE, [g(expires_at=future)], WEB1, "shell").allowed


# --- ordering ---------------------------------------------------------------------------------


def test_grants_are_considered_in_id_order_whatever_the_input_order() -> None:
    grants = [g(id=9, logins=("nine",)), g(id=4, logins=("four",)), g(id=7, logins=("seven",))]
    for perm in (grants, list(reversed(grants)), [grants[1], grants[0], grants[2]]):
        d = decide(ALICE, perm, WEB1, "shell", now=NOW)
        assert d.login == "four" and d.grant is not None and d.grant.id == 4


def test_decide_accepts_any_iterable() -> None:
    d = decide(ALICE, iter([g()]), WEB1, "shell", now=NOW)
    assert d.allowed


def test_user_and_group_grants_mix() -> None:
    subj = Subject("alice", frozenset({"ops"}))
    grants = [g(id=3, user="alice", logins=("mine",)), g(id=1, group="ops", logins=("ops",))]
    d = decide(subj, grants, WEB1, "shell", now=NOW)
    assert d.login == "ops" and d.grant is not None and d.grant.group == "ops"
    assert "group ops" in d.message


# --- messages ---------------------------------------------------------------------------------


def test_allow_message_names_the_deciding_grant() -> None:
    grants = [g(id=12, target="web*", logins=("app",))]
    d = decide(ALICE, grants, WEB1, "shell", now=NOW)
    assert d.allowed
    assert d.message.startswith("allow")
    assert "grant #12" in d.message
    assert "user alice" in d.message and "web*" in d.message
    assert "as app" in d.message
    assert "\n" not in d.message


def test_deny_messages_start_with_deny_and_are_one_line() -> None:
    cases = [
        decide(ALICE, [], WEB1, "shell", now=NOW),
        decide(ALICE, [g(rights="exec")], WEB1, "shell", now=NOW),
        decide(ALICE, [g()], WEB1, "shell", login="root", now=NOW),
        decide(ALICE, [g(expires_at=NOW)], WEB1, "shell", now=NOW),
    ]
    for d in cases:
        assert not d.allowed
        assert d.message.startswith("deny")
        assert "\n" not in d.message


def test_describe_lists_the_grant() -> None:
    grant = g(
        id=7,
        target="web*",
        labels=(("env", "prod"),),
        logins=(),
        paths=("/srv",),
        expires_at=datetime(2031, 1, 2, 3, 4, tzinfo=UTC),
    )
    text = grant.describe()
    assert "grant #7" in text and "web*" in text and "env=prod" in text
    assert "exec,shell" in text and "image user" in text and "/srv" in text and "2031-01-02" in text


# --- paths ------------------------------------------------------------------------------------


def test_paths_of_deciding_grant() -> None:
    d = decide(ALICE, [g(paths=("/srv/app/",))], WEB1, "sftp-read", now=NOW)
    assert not d.allowed  # right missing
    d = decide(ALICE, [g(rights="sftp-read", paths=("/srv/app/",))], WEB1, "sftp-read", now=NOW)
    assert d.allowed and d.paths == ("/srv/app",)


def test_paths_merge_over_allowing_grants() -> None:
    grants = [
        g(id=1, rights="sftp-read", paths=("/srv/a",)),
        g(id=2, rights="sftp-read", paths=("/srv/b", "/srv/a/")),
    ]
    d = decide(ALICE, grants, WEB1, "sftp-read", now=NOW)
    assert d.allowed and d.paths == ("/srv/a", "/srv/b")


def test_unrestricted_grant_wins_merge() -> None:
    grants = [g(id=1, rights="sftp-read", paths=("/srv/a",)), g(id=2, rights="sftp-read")]
    d = decide(ALICE, grants, WEB1, "sftp-read", now=NOW)
    assert d.allowed and d.paths == ()


def test_paths_of_grants_not_allowing_the_login_are_not_merged() -> None:
    grants = [
        g(id=1, rights="sftp-read", logins=("app",), paths=("/srv/app",)),
        g(id=2, rights="sftp-read", logins=("root",), paths=()),
    ]
    d = decide(ALICE, grants, WEB1, "sftp-read", now=NOW)
    assert d.login == "app" and d.paths == ("/srv/app",)
    d = decide(ALICE, grants, WEB1, "sftp-read", login="root", now=NOW)
    assert d.login == "root" and d.paths == ()


def test_paths_of_grants_without_the_right_are_not_merged() -> None:
    grants = [
        g(id=1, rights="sftp-read", paths=("/srv/app",)),
        g(id=2, rights="shell", paths=()),
    ]
    d = decide(ALICE, grants, WEB1, "sftp-read", now=NOW)
    assert d.paths == ("/srv/app",)


def test_paths_of_expired_grants_are_not_merged() -> None:
    grants = [
        g(id=1, rights="sftp-read", paths=("/srv/app",)),
        g(id=2, rights="sftp-read", paths=(), expires_at=NOW - timedelta(days=1)),
    ]
    d = decide(ALICE, grants, WEB1, "sftp-read", now=NOW)
    assert d.paths == ("/srv/app",)


@pytest.mark.parametrize(
    ("paths", "resolved", "ok"),
    [
        ((), "/anything", True),
        (("/srv/app",), "/srv/app", True),
        (("/srv/app",), "/srv/app/", True),
        (("/srv/app",), "/srv/app/x/y", True),
        (("/srv/app",), "/srv/application", False),
        (("/srv/app",), "/srv/app.bak", False),
        (("/srv/app",), "/srv/ap", False),
        (("/srv/app",), "/srv", False),
        (("/srv/app",), "/", False),
        (("/srv/app",), "/etc/passwd", False),
        (("/srv/app/",), "/srv/app/x", True),
        (("/srv/app/",), "/srv/application", False),
        (("srv/app",), "/srv/app/x", True),
        (("/srv//app",), "/srv/app/x", True),
        (("/srv/app",), "/srv/app/../secret", False),
        (("/srv/app",), "/srv/app/../app/x", True),
        (("/srv/app",), "/srv/app/./x", True),
        (("/srv/app",), "//srv/app/x", True),
        (("/srv/app",), "srv/app/x", True),
        (("/",), "/etc/passwd", True),
        (("/srv/a", "/srv/b"), "/srv/b/1", True),
        (("/srv/a", "/srv/b"), "/srv/c/1", False),
        (("/srv/app/..",), "/srv/x", True),  # normalised to /srv
        (("/srv/app/..",), "/etc", False),
    ],
)
def test_path_allowed(paths: tuple[str, ...], resolved: str, ok: bool) -> None:
    assert path_allowed(paths, resolved) is ok


def test_normalize_prefix() -> None:
    assert normalize_prefix("/srv/app/") == "/srv/app"
    assert normalize_prefix("srv/app") == "/srv/app"
    assert normalize_prefix("/") == "/"
    assert normalize_prefix("//") == "/"
    assert normalize_prefix("/srv/../etc") == "/etc"
    assert normalize_prefix("/a/./b//c/") == "/a/b/c"


_seg = st.text(alphabet="ab.", min_size=1, max_size=4)


@settings(max_examples=300)
@given(st.lists(_seg, min_size=1, max_size=4), st.lists(_seg, min_size=0, max_size=5))
def test_path_allowed_never_escapes_prefix(prefix: list[str], rest: list[str]) -> None:
    pfx = "/" + "/".join(prefix)
    candidate = pfx + "/" + "/".join(rest)
    norm_p = normalize_prefix(pfx)
    ok = path_allowed((pfx,), candidate)
    norm_c = posixpath.normpath(candidate)
    inside = norm_p == "/" or norm_c == norm_p or norm_c.startswith(norm_p + "/")
    assert ok is inside


# --- access (listings) -------------------------------------------------------------------------


def test_access_unions_rights_and_logins() -> None:
    grants = [
        g(id=2, rights="exec", logins=("root", "app")),
        g(id=1, rights="shell", logins=("app",)),
        g(id=3, rights="sftp-read", user="bob"),
    ]
    a = access(ALICE, grants, WEB1, now=NOW)
    assert a == Access(frozenset({"shell", "exec"}), ("app", "root"))


def test_access_star_for_image_user() -> None:
    a = access(ALICE, [g(logins=())], WEB1, now=NOW)
    assert a is not None and a.logins == (IMAGE_USER,)


def test_access_ignores_expired_and_unmatched() -> None:
    grants = [
        g(id=1, expires_at=NOW - timedelta(days=1)),
        g(id=2, target="db*"),
        g(id=3, labels=(("env", "dev"),)),
    ]
    assert access(ALICE, grants, WEB1, now=NOW) is None
    a = access(ALICE, grants, DB1, now=NOW)
    assert a is not None and a.rights == frozenset({"shell", "exec"})


# --- parse_rights -----------------------------------------------------------------------------


def test_parse_rights() -> None:
    assert parse_rights("shell,exec") == frozenset({"shell", "exec"})
    assert parse_rights(" shell , exec ,") == frozenset({"shell", "exec"})
    assert parse_rights("exec,exec") == frozenset({"exec"})
    assert parse_rights(",".join(KNOWN_RIGHTS)) == KNOWN_RIGHTS
    assert parse_rights("sftp-read,sftp-write,forward") == {"sftp-read", "sftp-write", "forward"}


@pytest.mark.parametrize("text", ["", ",", " , ", "root", "shell,root", "Shell", "shell;exec", "*"])
def test_parse_rights_rejects(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_rights(text)
    assert "\n" not in str(info.value)


def test_parse_rights_message_lists_known() -> None:
    with pytest.raises(ValueError, match="unknown right") as info:
        parse_rights("shell,sudo")
    assert "sudo" in str(info.value) and "exec" in str(info.value)


# A further right of a running session (decide_as): the session's login, that right's grants ------

ALICE = Subject("alice")
WEB = Target("web1")
RD = frozenset({Right.SFTP_READ})
WR = frozenset({Right.SFTP_WRITE})
RW = RD | WR


def _g(
    gid: int, rights: frozenset[str], logins: tuple[str, ...] = (), paths: tuple[str, ...] = ()
) -> Grant:
    return Grant(id=gid, target="web*", rights=rights, user="alice", logins=logins, paths=paths)


def test_write_paths_come_only_from_write_grants() -> None:
    # Read anywhere + write only under /srv/up: writes are confined to /srv/up.
    grants = [_g(1, RD, ("app",)), _g(2, WR, ("app",), ("/srv/up",))]
    read = decide(ALICE, grants, WEB, Right.SFTP_READ, "app")
    write = decide_as(ALICE, grants, WEB, Right.SFTP_WRITE, read.login)
    assert read.allowed and read.paths == ()
    assert write.allowed and write.paths == ("/srv/up",)


def test_read_paths_never_widen_write_paths_mirror() -> None:
    # Mirror: read confined, write anywhere -> the write decision is unrestricted, read is not.
    grants = [_g(1, RD, ("app",), ("/srv/app",)), _g(2, WR, ("app",))]
    assert decide(ALICE, grants, WEB, Right.SFTP_READ, "app").paths == ("/srv/app",)
    assert decide_as(ALICE, grants, WEB, Right.SFTP_WRITE, "app").paths == ()


def test_write_for_another_login_does_not_make_the_session_writable() -> None:
    grants = [_g(1, RD, ("app",)), _g(2, WR, ("root",))]
    read = decide(ALICE, grants, WEB, Right.SFTP_READ)  # no login in the name: app
    assert read.login == "app"
    write = decide_as(ALICE, grants, WEB, Right.SFTP_WRITE, read.login)
    assert not write.allowed and write.reason is DenyReason.LOGIN_NOT_ALLOWED
    # Mirror: the root session is writable, the app one is not.
    assert decide_as(ALICE, grants, WEB, Right.SFTP_WRITE, "root").allowed


def test_image_user_session_needs_a_write_grant_for_the_image_user() -> None:
    grants = [_g(1, RD), _g(2, WR, ("root",))]
    read = decide(ALICE, grants, WEB, Right.SFTP_READ)
    assert read.allowed and read.login is None
    assert not decide_as(ALICE, grants, WEB, Right.SFTP_WRITE, None).allowed
    # A write grant without logins (the image's user) or with '*' does allow it.
    assert decide_as(ALICE, [*grants, _g(3, WR)], WEB, Right.SFTP_WRITE, None).allowed
    assert decide_as(ALICE, [*grants, _g(3, WR, (ANY_LOGIN,))], WEB, Right.SFTP_WRITE, None).allowed


def test_write_paths_merge_only_grants_for_that_login() -> None:
    grants = [_g(1, WR, ("app",), ("/srv/a",)), _g(2, WR, ("root",)), _g(3, RD, ("app",))]
    w = decide_as(ALICE, grants, WEB, Right.SFTP_WRITE, "app")
    assert w.allowed and w.paths == ("/srv/a",)  # root's unrestricted grant does not widen app's
    assert decide_as(ALICE, grants, WEB, Right.SFTP_WRITE, "root").paths == ()


def test_expired_write_grant_gives_no_write() -> None:
    past = datetime.now(UTC) - timedelta(minutes=1)
    grants = [
        _g(1, RD, ("app",)),
        Grant(2, "web*", WR, user="alice", logins=("app",), expires_at=past),
    ]
    assert not decide_as(ALICE, grants, WEB, Right.SFTP_WRITE, "app").allowed
