"""``/users``, ``/users/{name}``, ``/users/{name}/keys``, ``/groups``, ``/groups/{name}``,
``/grants``, ``/grants/{id}``: thin handlers over :mod:`gateway.admin`."""

from __future__ import annotations

from gateway.admin import grants, groups, keys, users
from gateway.admin.grants import grant_view
from gateway.admin.groups import group_view
from gateway.admin.keys import key_view
from gateway.admin.users import user_view, user_with_grants_view
from gateway.admin.when import parse_expiry
from gateway.errors import NotFound
from gateway.store import parse_public_key
from gateway.web.api import models as m
from gateway.web.api.base import Call, Route, listed
from gateway.web.api.fields import at_field

# Users --------------------------------------------------------------------------------------


async def list_users(call: Call) -> m.UserList:
    return listed(call, await call.store.list_users(), user_view, m.UserOut, m.UserList)


async def add_user(call: Call) -> m.UserDetail:
    b: m.UserCreate = call.body
    if b.key is not None:
        with at_field("key"):
            parse_public_key(b.key)
    await users.add_user(
        call.store, call.actor, b.name, password=b.password, display=b.display, key=b.key
    )
    return await _user(call, b.name)


async def show_user(call: Call) -> m.UserDetail:
    return await _user(call, call.path["name"])


async def _user(call: Call, name: str) -> m.UserDetail:
    user, found = await users.user_and_grants(call.store, name)
    return m.UserDetail.model_validate(user_with_grants_view(user, found))


async def change_user(call: Call) -> m.UserDetail:
    b: m.UserPatch = call.body
    name = call.path["name"]
    await call.store.get_user(name)  # 404 before anything changes
    if b.disabled is not None:
        await users.set_disabled(call.store, call.actor, name, b.disabled)
    if "password" in b.model_fields_set:
        await users.set_password(call.store, call.actor, name, b.password)
    return await _user(call, name)


async def remove_user(call: Call) -> None:
    await users.remove_user(call.store, call.actor, call.path["name"])


# Keys ---------------------------------------------------------------------------------------


async def list_keys(call: Call) -> m.KeyList:
    found = await call.store.list_keys(call.path["name"])
    return listed(call, found, key_view, m.KeyOut, m.KeyList)


async def add_key(call: Call) -> m.KeyOut:
    b: m.KeyCreate = call.body
    name = call.path["name"]
    with at_field("expires"):
        expires_at = parse_expiry(b.expires)
    with at_field("key"):
        parse_public_key(b.key, b.comment)
    fp, _ = await keys.add_key(
        call.store, call.actor, name, b.key, comment=b.comment, expires_at=expires_at
    )
    found = [k for k in await call.store.list_keys(name) if k.fingerprint == fp]
    return m.KeyOut.model_validate(key_view(found[0]))


async def remove_key(call: Call) -> None:
    b: m.KeyRemove = call.query
    await keys.remove_key(call.store, call.actor, b.fingerprint, user=call.path["name"])


# Groups -------------------------------------------------------------------------------------


async def list_groups(call: Call) -> m.GroupList:
    return listed(call, await call.store.list_groups(), group_view, m.GroupOut, m.GroupList)


async def _group(call: Call, name: str) -> m.GroupOut:
    for g in await call.store.list_groups():
        if g.name == name:
            return m.GroupOut.model_validate(group_view(g))
    raise NotFound(f"no such group: {name}")


async def add_group(call: Call) -> m.GroupOut:
    b: m.GroupCreate = call.body
    await groups.add_group(call.store, call.actor, b.name)
    return await _group(call, b.name)


async def show_group(call: Call) -> m.GroupOut:
    return await _group(call, call.path["name"])


async def change_group(call: Call) -> m.GroupOut:
    b: m.GroupPatch = call.body
    name = call.path["name"]
    await _group(call, name)  # 404 before anything changes
    for user in b.add:
        await groups.add_member(call.store, call.actor, name, user)
    for user in b.remove:
        await groups.remove_member(call.store, call.actor, name, user)
    return await _group(call, name)


async def remove_group(call: Call) -> None:
    await groups.remove_group(call.store, call.actor, call.path["name"])


# Grants -------------------------------------------------------------------------------------


async def list_grants(call: Call) -> m.GrantList:
    return listed(call, await call.store.all_grants(), grant_view, m.GrantOut, m.GrantList)


async def add_grant(call: Call) -> m.GrantOut:
    b: m.GrantCreate = call.body
    with at_field("expires"):
        expires_at = parse_expiry(b.expires)
    grant = await grants.add_grant(
        call.store,
        call.actor,
        user=b.user,
        group=b.group,
        target=b.target,
        labels=b.labels,
        rights=b.rights,
        logins=b.logins,
        paths=b.paths,
        ports=b.ports,
        engine=b.engine,
        expires_at=expires_at,
        record_pty=b.record,
    )
    return m.GrantOut.model_validate(grant_view(grant))


async def show_grant(call: Call) -> m.GrantOut:
    return m.GrantOut.model_validate(grant_view(await call.store.get_grant(call.path["id"])))


async def remove_grant(call: Call) -> None:
    await grants.remove_grant(call.store, call.actor, call.path["id"])


NAME = {"name": "name"}
ROUTES = [
    Route("GET", "/users", list_users, "List users", "users", m.UserList, query=m.Page),
    Route("POST", "/users", add_user, "Add a user (with a password and a key)", "users",
          m.UserDetail, status=201, body=m.UserCreate, write=True),
    Route("GET", "/users/{name}", show_user, "One user with keys, groups and grants", "users",
          m.UserDetail, params=NAME),
    Route("PATCH", "/users/{name}", change_user, "Disable, enable, set or clear the password",
          "users", m.UserDetail, body=m.UserPatch, params=NAME, write=True),
    Route("DELETE", "/users/{name}", remove_user, "Remove a user with keys, memberships and "
          "grants; their connections end", "users", None, status=204, params=NAME, write=True),
    Route("GET", "/users/{name}/keys", list_keys, "A user's public keys", "keys", m.KeyList,
          query=m.Page, params=NAME),
    Route("POST", "/users/{name}/keys", add_key, "Add a public key to a user", "keys", m.KeyOut,
          status=201, body=m.KeyCreate, params=NAME, write=True),
    Route("DELETE", "/users/{name}/keys", remove_key, "Remove one of a user's keys (by "
          "fingerprint); connections that logged in with it end", "keys", None, status=204,
          query=m.KeyRemove, params=NAME, write=True),
    Route("GET", "/groups", list_groups, "List groups with their members", "groups",
          m.GroupList, query=m.Page),
    Route("POST", "/groups", add_group, "Add a group", "groups", m.GroupOut, status=201,
          body=m.GroupCreate, write=True),
    Route("GET", "/groups/{name}", show_group, "One group", "groups", m.GroupOut, params=NAME),
    Route("PATCH", "/groups/{name}", change_group, "Add or remove members", "groups",
          m.GroupOut, body=m.GroupPatch, params=NAME, write=True),
    Route("DELETE", "/groups/{name}", remove_group, "Remove a group with its memberships and "
          "grants", "groups", None, status=204, params=NAME, write=True),
    Route("GET", "/grants", list_grants, "List grants", "grants", m.GrantList, query=m.Page),
    Route("POST", "/grants", add_grant, "Grant a user or a group rights on containers",
          "grants", m.GrantOut, status=201, body=m.GrantCreate, write=True),
    Route("GET", "/grants/{id}", show_grant, "One grant", "grants", m.GrantOut,
          params={"id": "id"}),
    Route("DELETE", "/grants/{id}", remove_grant, "Remove a grant", "grants", None, status=204,
          params={"id": "id"}, write=True),
]  # fmt: skip
