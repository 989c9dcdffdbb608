"""The store against real databases: every test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import asyncssh
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from gateway.errors import Conflict, InvalidInput, NotFound, StoreUnavailable
from gateway.policy import Subject, Target, decide
from gateway.store import Store, hash_password, verify_password
from gateway.store.models import Base
from tests.support import openssh

TABLES = {
    "users",
    "public_keys",
    "groups",
    "group_members",
    "grants",
    "audit_events",
    "sessions",
    "alembic_version",
}


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    s = Store.from_url(db_url)
    await s.upgrade()
    try:
        yield s
    finally:
        await s.close()


@dataclass(frozen=True)
class KeyPair:
    private: Path
    public: Path
    private_text: str
    public_text: str


def keygen(tmp_path: Path, kind: str = "ed25519", name: str = "id", comment: str = "") -> KeyPair:
    """A key pair made by OpenSSH's ssh-keygen."""
    path = openssh.keygen(tmp_path / f"{name}_{kind}", comment, kind)
    pub = Path(f"{path}.pub")
    return KeyPair(path, pub, path.read_text(), pub.read_text())


def ssh_keygen_fingerprint(pub: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.split()[1]


async def count(store: Store, table: str) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())


# Schema ---------------------------------------------------------------------------------------


async def test_migrations_create_schema_from_nothing(db_url: str) -> None:
    s = Store.from_url(db_url)
    try:
        assert await s.schema_state() == "empty"
        assert not await s.is_current()
        await s.upgrade()
        assert await s.schema_state() == "current"
        assert await s.is_current()
        await s.upgrade()  # idempotent
        assert await s.is_current()

        def inspect(conn: sa.Connection) -> tuple[set[str], list[object]]:
            names = set(sa.inspect(conn).get_table_names())
            ctx = MigrationContext.configure(conn, opts={"compare_type": False})
            return names, compare_metadata(ctx, Base.metadata)

        async with s.engine.connect() as conn:
            names, diff = await conn.run_sync(inspect)
        assert names >= TABLES
        # The ORM models mirror the migrations exactly.
        assert diff == []
    finally:
        await s.close()


async def test_concurrent_upgrades_do_not_collide(db_url: str) -> None:
    stores = [Store.from_url(db_url) for _ in range(3)]
    try:
        await asyncio.gather(*(s.upgrade() for s in stores))
        for s in stores:
            assert await s.is_current()
    finally:
        for s in stores:
            await s.close()


async def test_unknown_revision_is_reported(store: Store) -> None:
    async with store.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE alembic_version SET version_num = 'ffff_future'"))
    assert await store.schema_state() == "unknown"
    with pytest.raises(StoreUnavailable, match="newer"):
        await store.upgrade()


async def test_missing_schema_says_upgrade(db_url: str) -> None:
    s = Store.from_url(db_url)
    try:
        with pytest.raises(StoreUnavailable, match="sshgw db upgrade"):
            await s.auth_user("alice")
    finally:
        await s.close()


# Users ----------------------------------------------------------------------------------------


async def test_user_crud(store: Store) -> None:
    await store.add_user("alice", display="Alice A")
    await store.add_user("bob", password_hash=hash_password("pw"))
    with pytest.raises(Conflict, match="alice"):
        await store.add_user("alice")
    for bad in ("", "a+b", "-x", "a b", "x" * 65, "ünï"):
        with pytest.raises(InvalidInput):
            await store.add_user(bad)

    users = await store.list_users()
    assert [u.name for u in users] == ["alice", "bob"]
    alice = await store.get_user("alice")
    assert alice.display == "Alice A"
    assert not alice.has_password and not alice.disabled
    assert alice.created_at.tzinfo is not None and alice.created_at.utcoffset() == timedelta(0)
    assert (await store.get_user("bob")).has_password

    await store.set_disabled("alice", True)
    assert (await store.get_user("alice")).disabled
    await store.set_disabled("alice", False)
    assert not (await store.get_user("alice")).disabled

    await store.set_password("alice", hash_password("new"))
    auth = await store.auth_user("alice")
    assert auth is not None and verify_password(auth.password_hash, "new")
    await store.set_password("alice", None)
    assert (await store.get_user("alice")).has_password is False

    await store.remove_user("bob")
    assert [u.name for u in await store.list_users()] == ["alice"]
    for op in (
        store.get_user("bob"),
        store.remove_user("bob"),
        store.set_disabled("bob", True),
        store.set_password("bob", None),
    ):
        with pytest.raises(NotFound, match="bob"):
            await op


async def test_auth_user_reads_keys_groups_and_state(store: Store, tmp_path: Path) -> None:
    await store.add_user("alice", password_hash=hash_password("pw"))
    await store.add_user("other")
    k1 = keygen(tmp_path, "ed25519", "a")
    k2 = keygen(tmp_path, "ecdsa", "b")
    expires = datetime.now(UTC) + timedelta(days=1)
    fp1 = await store.add_key("alice", k1.public_text)
    fp2 = await store.add_key("alice", k2.public_text, expires_at=expires)
    await store.add_key("other", keygen(tmp_path, "ed25519", "c").public_text)
    for g in ("ops", "dev", "unrelated"):
        await store.add_group(g)
    await store.add_member("ops", "alice")
    await store.add_member("dev", "alice")
    await store.add_member("unrelated", "other")

    auth = await store.auth_user("alice")
    assert auth is not None
    assert auth.name == "alice" and not auth.disabled
    assert verify_password(auth.password_hash, "pw")
    assert {k.fingerprint for k in auth.keys} == {fp1, fp2}
    assert auth.groups == frozenset({"ops", "dev"})
    by_fp = {k.fingerprint: k for k in auth.keys}
    assert by_fp[fp1].expires_at is None
    got = by_fp[fp2].expires_at
    assert got is not None and got.tzinfo is not None
    assert abs((got - expires).total_seconds()) < 1
    assert by_fp[fp2].public_key.startswith("ecdsa-sha2-nistp256 AAAA")
    assert auth.key(fp1) is not None and auth.key("SHA256:nope") is None
    assert not by_fp[fp2].expired()

    await store.set_disabled("alice", True)
    auth = await store.auth_user("alice")
    assert auth is not None and auth.disabled

    assert await store.auth_user("nobody") is None
    assert await store.auth_user("bad name!") is None
    await store.add_user("bare")
    bare = await store.auth_user("bare")
    assert bare == type(bare)("bare", False, None, (), frozenset())  # type: ignore[misc]


# Keys -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ed25519", "ecdsa", "rsa"])
async def test_key_fingerprint_matches_ssh_keygen(store: Store, tmp_path: Path, kind: str) -> None:
    await store.add_user("alice")
    pair = keygen(tmp_path, kind, comment="alice@laptop")
    fp = await store.add_key("alice", pair.public_text)
    assert fp == ssh_keygen_fingerprint(pair.public)
    assert fp.startswith("SHA256:")
    [info] = await store.list_keys("alice")
    assert info.fingerprint == fp and info.comment == "alice@laptop"
    assert info.public_key == pair.public_text.strip()
    assert info.last_used_at is None
    # The stored text is a valid key with the same fingerprint.
    assert asyncssh.import_public_key(info.public_key).get_fingerprint("sha256") == fp


async def test_key_comment_override_and_listing(store: Store, tmp_path: Path) -> None:
    await store.add_user("alice")
    await store.add_user("bob")
    pa = keygen(tmp_path, name="a", comment="orig").public_text
    pb = keygen(tmp_path, name="b").public_text
    fa = await store.add_key("alice", pa, comment="work laptop")
    fb = await store.add_key("bob", pb)
    keys = await store.list_keys()
    assert [(k.user, k.fingerprint) for k in keys] == [("alice", fa), ("bob", fb)]
    assert keys[0].comment == "work laptop" and keys[0].public_key.endswith(" work laptop")
    assert keys[1].comment is None
    assert [k.fingerprint for k in await store.list_keys("bob")] == [fb]
    with pytest.raises(NotFound):
        await store.list_keys("nobody")


async def test_key_duplicates_and_bad_text(store: Store, tmp_path: Path) -> None:
    await store.add_user("alice")
    await store.add_user("bob")
    pair = keygen(tmp_path)
    pub = pair.public_text
    fp = await store.add_key("alice", pub)
    with pytest.raises(Conflict, match="alice"):
        await store.add_key("bob", pub)
    with pytest.raises(Conflict):
        await store.add_key("alice", pub)
    with pytest.raises(NotFound):
        await store.add_key("nobody", keygen(tmp_path, name="n").public_text)
    with pytest.raises(InvalidInput, match="PRIVATE"):
        await store.add_key("alice", pair.private_text)
    bad = [
        "",
        "garbage",
        "ssh-ed25519 AAAA",
        "ssh-ed25519 !!!notbase64 x",
        pub + pub,
        'from="10.0.0.1" ' + pub,
        "\x00\x01\x02",
    ]
    for text in bad:
        with pytest.raises(InvalidInput):
            await store.add_key("alice", text)
    assert [k.fingerprint for k in await store.list_keys("alice")] == [fp]


async def test_key_expiry_use_and_removal(store: Store, tmp_path: Path) -> None:
    await store.add_user("alice")
    pub = keygen(tmp_path).public_text
    # An aware non-UTC time is stored as the same instant.
    plus2 = timezone(timedelta(hours=2))
    past = datetime(2020, 5, 1, 12, 0, tzinfo=plus2)
    fp = await store.add_key("alice", pub, expires_at=past)
    auth = await store.auth_user("alice")
    assert auth is not None
    [key] = auth.keys
    assert key.expires_at == past and key.expires_at.utcoffset() == timedelta(0)
    assert key.expired()

    before = datetime.now(UTC) - timedelta(seconds=1)
    await store.key_used(fp)
    await store.key_used("SHA256:unknown")  # not an error
    [info] = await store.list_keys("alice")
    assert info.last_used_at is not None and info.last_used_at >= before

    assert await store.remove_key(fp.removeprefix("SHA256:")) == "alice"
    assert await store.list_keys() == []
    with pytest.raises(NotFound):
        await store.remove_key(fp)


# Groups ---------------------------------------------------------------------------------------


async def test_groups_and_members(store: Store) -> None:
    await store.add_user("alice")
    await store.add_user("bob")
    await store.add_group("ops")
    await store.add_group("dev")
    with pytest.raises(Conflict):
        await store.add_group("ops")
    with pytest.raises(InvalidInput):
        await store.add_group("bad group")
    await store.add_member("ops", "alice")
    await store.add_member("ops", "bob")
    with pytest.raises(Conflict):
        await store.add_member("ops", "bob")
    with pytest.raises(NotFound, match="group"):
        await store.add_member("nope", "bob")
    with pytest.raises(NotFound, match="user"):
        await store.add_member("ops", "nobody")
    groups = {g.name: g.members for g in await store.list_groups()}
    assert groups == {"dev": (), "ops": ("alice", "bob")}
    assert (await store.get_user("alice")).groups == ("ops",)

    await store.remove_member("ops", "alice")
    with pytest.raises(NotFound):
        await store.remove_member("ops", "alice")
    assert {g.name: g.members for g in await store.list_groups()}["ops"] == ("bob",)
    await store.remove_group("dev")
    with pytest.raises(NotFound):
        await store.remove_group("dev")
    assert [g.name for g in await store.list_groups()] == ["ops"]


# Grants ---------------------------------------------------------------------------------------


async def test_grants_for_includes_group_grants(store: Store) -> None:
    for u in ("alice", "bob", "carol"):
        await store.add_user(u)
    await store.add_group("ops")
    await store.add_group("other")
    await store.add_member("ops", "alice")
    await store.add_member("ops", "bob")
    await store.add_member("other", "carol")
    g1 = await store.add_grant(user="alice", target="web*", rights="shell", logins=["app"])
    g2 = await store.add_grant(
        group="ops",
        target="*",
        labels={"env": "prod"},
        rights=["exec", "shell"],
        logins=["root", "*"],
        paths=["/srv/app/", "/tmp"],
        record=False,
    )
    g3 = await store.add_grant(user="carol", target="db", rights="exec")
    g4 = await store.add_grant(group="other", target="db", rights="exec")

    alice = await store.grants_for("alice")
    assert [g.id for g in alice] == [g1, g2]
    first, second = alice
    assert first.user == "alice" and first.group is None
    assert first.rights == frozenset({"shell"}) and first.logins == ("app",)
    assert first.labels == () and first.paths == () and first.record
    assert second.group == "ops" and second.user is None
    assert second.labels == (("env", "prod"),)
    assert second.rights == frozenset({"exec", "shell"})
    assert second.logins == ("root", "*")
    assert second.paths == ("/srv/app", "/tmp")
    assert second.record is False
    assert [g.id for g in await store.grants_for("bob")] == [g2]
    assert [g.id for g in await store.grants_for("carol")] == [g3, g4]
    assert await store.grants_for("nobody") == []
    assert [g.id for g in await store.all_grants()] == [g1, g2, g3, g4]
    assert [g.id for g in await store.all_grants()] == [g1, g2, g3, g4]
    assert (await store.get_grant(g2)).group == "ops"

    # What the SSH server does with them.
    auth = await store.auth_user("bob")
    assert auth is not None
    subject = Subject("bob", auth.groups)
    prod = Target("api", labels={"env": "prod"})
    allowed = decide(subject, await store.grants_for("bob"), prod, "exec")
    assert allowed.allowed and allowed.grant is not None and allowed.grant.id == g2
    assert allowed.login == "root" and allowed.paths == ("/srv/app", "/tmp")
    denied = decide(subject, await store.grants_for("bob"), Target("api"), "exec")
    assert not denied.allowed

    await store.remove_grant(g1)
    with pytest.raises(NotFound):
        await store.remove_grant(g1)
    with pytest.raises(NotFound):
        await store.get_grant(g1)
    assert [g.id for g in await store.grants_for("alice")] == [g2]


async def test_grant_expiry_is_kept_for_the_policy(store: Store) -> None:
    await store.add_user("alice")
    past = datetime.now(UTC) - timedelta(hours=1)
    gid = await store.add_grant(user="alice", target="web1", rights="shell", expires_at=past)
    [grant] = await store.grants_for("alice")
    assert grant.id == gid and grant.expires_at is not None
    assert abs((grant.expires_at - past).total_seconds()) < 1
    d = decide(Subject("alice"), [grant], Target("web1"), "shell")
    assert not d.allowed and "expired" in d.message


async def test_grant_validation(store: Store) -> None:
    await store.add_user("alice")
    await store.add_group("ops")
    with pytest.raises(NotFound, match="user"):
        await store.add_grant(user="nobody", target="*", rights="shell")
    with pytest.raises(NotFound, match="group"):
        await store.add_grant(group="nogroup", target="*", rights="shell")
    bad_calls = [
        {"target": "*", "rights": "shell"},  # no subject
        {"user": "alice", "group": "ops", "target": "*", "rights": "shell"},
        {"user": "alice", "target": "", "rights": "shell"},
        {"user": "alice", "target": "a b", "rights": "shell"},
        {"user": "alice", "target": "*", "rights": "shell,fly"},
        {"user": "alice", "target": "*", "rights": ""},
        {"user": "alice", "target": "*", "rights": "shell", "logins": ["bad login"]},
        {"user": "alice", "target": "*", "rights": "shell", "paths": ["relative/path"]},
        {"user": "alice", "target": "*", "rights": "shell", "labels": {"": "x"}},
    ]
    for kwargs in bad_calls:
        with pytest.raises(InvalidInput):
            await store.add_grant(**kwargs)  # type: ignore[arg-type]
    assert await store.all_grants() == []


# Cascades -------------------------------------------------------------------------------------


async def test_removing_a_user_removes_keys_memberships_and_grants(
    store: Store, tmp_path: Path
) -> None:
    await store.add_user("alice")
    await store.add_user("bob")
    await store.add_group("ops")
    await store.add_member("ops", "alice")
    await store.add_member("ops", "bob")
    await store.add_key("alice", keygen(tmp_path).public_text)
    await store.add_grant(user="alice", target="*", rights="shell")
    gops = await store.add_grant(group="ops", target="*", rights="exec")

    await store.remove_user("alice")
    assert await count(store, "public_keys") == 0
    assert await count(store, "group_members") == 1
    assert [g.id for g in await store.all_grants()] == [gops]

    await store.remove_group("ops")
    assert await count(store, "group_members") == 0
    assert await store.all_grants() == []
    assert [u.name for u in await store.list_users()] == ["bob"]


# Audit events ---------------------------------------------------------------------------------


async def test_audit_events(store: Store) -> None:
    await store.add_audit_event(
        "admin",
        actor="root",
        detail={"action": "user.add", "user": "alice", "when": datetime(2030, 1, 1, tzinfo=UTC)},
        user_name="alice",
    )
    await store.add_audit_event(
        "auth", actor=None, detail={}, remote_addr="10.0.0.1:5555", container="web1"
    )
    with pytest.raises(TypeError):
        await store.add_audit_event("x", actor=None, detail={}, bogus=1)
    async with store.engine.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT kind, actor, user_name, container, remote_addr, detail, ts "
                    "FROM audit_events ORDER BY id"
                )
            )
        ).all()
    assert [(r.kind, r.actor, r.user_name, r.container) for r in rows] == [
        ("admin", "root", "alice", None),
        ("auth", None, None, "web1"),
    ]
    assert rows[1].remote_addr == "10.0.0.1:5555"


# Failures -------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_dead_database_is_store_unavailable_without_password() -> None:
    secret = "hunter2-Very-Secret"
    port = _free_port()
    s = Store.from_url(f"postgresql+asyncpg://sshgw:{secret}@127.0.0.1:{port}/sshgw")
    try:
        for op in (s.ping(), s.auth_user("alice"), s.upgrade(), s.list_users(), s.key_used("x")):
            with pytest.raises(StoreUnavailable) as info:
                await op
            msg = info.value.user_message
            assert secret not in msg and secret not in str(info.value)
            assert "\n" not in msg
            assert "refused" in msg and f":{port}" in msg and "***" in msg
    finally:
        await s.close()


@pytest.mark.postgres
async def test_missing_postgres_database_is_store_unavailable(pg_base_url: str) -> None:
    s = Store.from_url(f"{pg_base_url}/sshgw_no_such_db_here")
    try:
        with pytest.raises(StoreUnavailable, match="does not exist"):
            await s.ping()
    finally:
        await s.close()


async def test_sqlite_unusable_path_is_store_unavailable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreUnavailable):
        Store.from_url(f"sqlite+aiosqlite:///{blocker}/sub/sshgw.db")
    not_db = tmp_path / "garbage.db"
    not_db.write_bytes(b"this is not a sqlite database" * 100)
    s = Store.from_url(f"sqlite+aiosqlite:///{not_db}")
    try:
        with pytest.raises(StoreUnavailable):
            await s.ping()
    finally:
        await s.close()


async def test_sqlite_locked_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "sshgw.db"
    s = Store.from_url(f"sqlite+aiosqlite:///{path}")
    try:
        await s.upgrade()
        holder = sqlite3.connect(path, isolation_level=None)
        try:
            holder.execute("BEGIN EXCLUSIVE")
            # Waits for the busy timeout, then gives up with a clear message.
            with pytest.raises(StoreUnavailable, match="busy"):
                await s.add_user("alice")
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        await s.add_user("alice")
    finally:
        await s.close()


async def test_sqlite_creates_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "sshgw.db"
    s = Store.from_url(f"sqlite:///{path}")  # plain sqlite:// picks the async driver
    try:
        await s.upgrade()
        assert path.is_file()
        async with s.engine.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar_one()
            fks = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar_one()
        assert str(mode).lower() == "wal" and fks == 1
    finally:
        await s.close()


def test_bad_urls_are_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        Store.from_url("not a url")
    with pytest.raises(InvalidInput, match="unsupported"):
        Store.from_url("mysql://u:p@h/db")
