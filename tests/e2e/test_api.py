"""The admin API of a running gateway (``/api/v1``): tokens and scopes, the resources, the
error shape, bounds, and that the CLI and the API give the same answers."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.apiclient import Api, new_token, web_gateway
from tests.e2e.helpers import Gateway, GatewayFactory, PtyProcess, unique, wait_until

pytestmark = pytest.mark.timeout(300)


@dataclass
class Site:
    gw: Gateway
    port: int
    admin: Api  # scope admin
    read: Api  # scope read
    admin_name: str


@pytest.fixture(scope="module")
def site(gateway_factory: GatewayFactory) -> Site:
    # The test client (127.0.0.1) is a trusted reverse proxy here.
    gw, port = web_gateway(gateway_factory, SSHGW_HTTP_PROXY_FROM="127.0.0.1")
    name = unique("adm")
    admin = new_token(gw, name, "admin")
    read = new_token(gw, unique("rd"), "read")
    return Site(gw, port, Api(port, admin), Api(port, read), name)


# Authentication and scopes ------------------------------------------------------------------


def test_no_token_is_401(site: Site) -> None:
    r = Api(site.port, None)("GET", "/users")
    assert r.status == 401 and r.error["code"] == "unauthorized"
    assert (r.headers["WWW-Authenticate"] or "").startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    [
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer sshgw_000000000000AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "Bearer not-a-token",
        "bearer " + "x" * 4000,
    ],
)
def test_bad_or_unknown_token_is_401(site: Site, header: str) -> None:
    r = site.admin("GET", "/users", headers={"Authorization": header})
    assert r.status == 401, r.body
    r.error  # noqa: B018  (the one shape)


def test_tampered_token_is_401(site: Site) -> None:
    token = site.admin.token or ""
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert site.admin("GET", "/users", token=tampered).status == 401


def test_read_token_reads_but_does_not_write(site: Site) -> None:
    assert site.read("GET", "/users").status == 200
    assert site.read("GET", "/audit").status == 200
    name = unique("ro")
    r = site.read("POST", "/users", {"name": name})
    assert r.status == 403 and r.error["code"] == "forbidden"
    assert site.admin("GET", f"/users/{name}").status == 404  # nothing was made
    assert site.read("DELETE", f"/users/{name}").status == 403
    assert site.read("POST", "/sessions/0000/kill").status == 403


def test_removed_token_is_401_at_once(site: Site) -> None:
    name = unique("gone")
    api = Api(site.port, new_token(site.gw, name, "admin"))
    assert api("GET", "/users").status == 200
    site.gw.cli("token", "remove", name)
    r = api("GET", "/users")
    assert r.status == 401 and "invalid_token" in (r.headers["WWW-Authenticate"] or "")


def test_expired_token_is_401(site: Site) -> None:
    name = unique("exp")
    api = Api(site.port, new_token(site.gw, name, "admin", "--expires", "+1h"))
    assert api("GET", "/users").status == 200
    # Its hour passes: the gateway's SQLite database is told so directly.
    with contextlib.closing(sqlite3.connect(site.gw.data_dir / "sshgw.db")) as db, db:
        db.execute(
            "UPDATE api_tokens SET expires_at = '2020-01-01 00:00:00.000000' WHERE name = ?",
            (name,),
        )
    r = api("GET", "/users")
    assert r.status == 401 and r.error["code"] == "unauthorized"


def test_token_list_never_shows_a_token(site: Site) -> None:
    out = site.gw.cli("token", "list", "--json").stdout
    rows = json.loads(out)
    assert any(r["name"] == site.admin_name and r["scope"] == "admin" for r in rows)
    assert (site.admin.token or "")[20:] not in out
    assert (site.admin.token or "")[20:] not in site.gw.log()


# Resources ----------------------------------------------------------------------------------


def test_user_lifecycle_is_audited_with_the_token(site: Site) -> None:
    name = unique("bob")
    r = site.admin("POST", "/users", {"name": name, "display": "Bob"},
                   headers={"X-Forwarded-For": "203.0.113.9"})  # fmt: skip
    assert r.status == 201, r.body
    assert r.json["name"] == name and r.json["grants"] == [] and r.json["password"] is False
    assert site.admin("POST", "/users", {"name": name}).status == 409
    r = site.admin("PATCH", f"/users/{name}", {"disabled": True, "password": "s3cret-pw"})
    assert r.status == 200 and r.json["disabled"] is True and r.json["password"] is True
    r = site.admin("PATCH", f"/users/{name}", {"password": None})
    assert r.status == 200 and r.json["password"] is False
    assert site.admin("DELETE", f"/users/{name}").status == 204
    assert site.admin("GET", f"/users/{name}").status == 404
    events = site.admin("GET", f"/audit?user={name}&kind=admin").json["items"]
    actions = [e["detail"]["action"] for e in events]
    assert actions == ["user.add", "user.disable", "user.passwd", "user.passwd", "user.remove"]
    assert {e["actor"] for e in events} == {f"token:{site.admin_name}"}
    assert events[0]["remote"] == "203.0.113.9"  # from the trusted proxy's header
    assert "s3cret-pw" not in json.dumps(events)


def test_keys(site: Site) -> None:
    name = unique("kk")
    site.gw.add_user(name, key=False)
    path = site.gw.new_key(name)
    pub = path.parent.joinpath(path.name + ".pub").read_text()
    r = site.admin("POST", f"/users/{name}/keys", {"key": pub, "expires": "+30d"})
    assert r.status == 201, r.body
    fp = r.json["fingerprint"]
    assert fp.startswith("SHA256:") and r.json["expires_at"]
    assert [k["fingerprint"] for k in site.admin("GET", f"/users/{name}/keys").json["items"]] == [
        fp
    ]
    other = unique("ko")
    site.gw.add_user(other, key=False)
    q = urllib.parse.quote(fp, safe="")
    assert site.admin("DELETE", f"/users/{other}/keys?fingerprint={q}").status == 404
    assert site.admin("DELETE", f"/users/{name}/keys?fingerprint={q}").status == 204
    assert site.admin("GET", f"/users/{name}/keys").json["items"] == []
    r = site.admin("POST", f"/users/{name}/keys", {"key": "ssh-ed25519 AAAAnotakey"})
    assert r.status == 422 and r.error["field"] == "key"


def test_groups_grants_and_check(site: Site) -> None:
    user, group = unique("gu"), unique("gg")
    assert site.admin("POST", "/users", {"name": user}).status == 201
    assert site.admin("POST", "/groups", {"name": group}).status == 201
    r = site.admin("PATCH", f"/groups/{group}", {"add": [user]})
    assert r.status == 200 and r.json["members"] == [user]
    r = site.admin("POST", "/grants", {"group": group, "target": "web-*", "rights": ["shell"],
                                       "logins": ["app"], "labels": {"env": "prod"}})  # fmt: skip
    assert r.status == 201, r.body
    gid = r.json["id"]
    assert r.json["labels"] == {"env": "prod"} and r.json["logins"] == ["app"]
    assert site.read("GET", f"/grants/{gid}").json == r.json
    check = site.read("GET", f"/check?user={user}&container=web-1&right=shell")
    assert check.status == 200 and check.json["allowed"] is False  # label env=prod unknown
    check = site.read("GET", f"/check?user={user}&container=db-1")
    assert check.json["allowed"] is False and check.json["grant"] is None
    bad = site.read("GET", f"/check?user={user}&container=web-1&right=fly")
    assert bad.status == 422 and bad.error["field"] == "right"
    assert site.admin("DELETE", f"/grants/{gid}").status == 204
    assert site.admin("GET", f"/grants/{gid}").status == 404
    r = site.admin("PATCH", f"/groups/{group}", {"remove": [user]})
    assert r.json["members"] == []
    assert site.admin("DELETE", f"/groups/{group}").status == 204


def test_cli_and_api_show_the_same_user(site: Site) -> None:
    name = unique("same")
    site.gw.add_user(name)
    site.gw.grant("same-*", user=name, rights="shell,exec", logins="app")
    cli = json.loads(site.gw.cli("user", "show", name, "--json").stdout)
    api = site.read("GET", f"/users/{name}").json

    def norm(doc: dict[str, object]) -> str:  # the two spell UTC differently
        return json.dumps(doc, sort_keys=True).replace("+00:00", "Z")

    assert norm(cli) == norm(api)


# Bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 422, None),
        (b'{"name": 5}', 422, "name"),
        (b'{"name": "ok", "extra": 1}', 422, "extra"),
        (b'{"name": "bad name"}', 422, "name"),
        (b'{"name": "a\\u0000b"}', 422, "name"),
        (b'{"name": "' + b"x" * 100 + b'"}', 422, "name"),
        (b"[" * 50_000, 400, None),
    ],
)
def test_bad_bodies_are_4xx_naming_the_field(
    site: Site, body: bytes, status: int, field: str | None
) -> None:
    r = site.admin("POST", "/users", raw=body, headers={"Content-Type": "application/json"})
    assert r.status == status, r.body
    err = r.error
    assert err["field"] == field and err["message"]


def test_body_size_is_bounded(site: Site) -> None:
    big = json.dumps({"name": "big", "display": "x" * (256 * 1024)}).encode()
    r = site.admin("POST", "/users", raw=big, headers={"Content-Type": "application/json"})
    assert r.status == 413 and r.error["code"] == "too_large"


def test_wrong_media_type_and_params(site: Site) -> None:
    r = site.admin("POST", "/users", raw=b"name=bob", headers={"Content-Type": "text/plain"})
    assert r.status == 415
    assert site.admin("GET", "/users?limit=0").error["field"] == "limit"
    assert site.admin("GET", "/users?limit=100000").status == 422
    assert site.admin("GET", "/users?colour=red").error["field"] == "colour"
    assert site.admin("GET", "/grants/99999999999999999999").status == 404
    assert site.admin("GET", "/grants/-1").status == 404
    assert site.admin("GET", "/grants/" + "9" * 5000).status == 404  # past int()'s digit limit
    assert site.admin("GET", "/users/%00").status == 404
    assert site.admin("GET", "/sessions/zz").status in (404, 422)
    assert site.admin("GET", "/audit?since=yesterday-ish").error["field"] == "since"


def test_lists_are_paginated(site: Site) -> None:
    for _ in range(3):
        site.admin("POST", "/groups", {"name": unique("pg")})
    first = site.read("GET", "/groups?limit=2")
    assert len(first.json["items"]) == 2 and first.json["more"] is True
    rest = site.read("GET", "/groups?limit=1000&offset=2").json["items"]
    everything = site.read("GET", "/groups?limit=1000").json["items"]
    assert first.json["items"] + rest == everything


def test_api_answers_are_not_cached(site: Site) -> None:
    assert site.read("GET", "/users").headers["Cache-Control"] == "no-store"


def test_spec_is_public_and_3_1(site: Site) -> None:
    r = Api(site.port, None)("GET", "/openapi.json")
    assert r.status == 200 and r.json["openapi"].startswith("3.1")
    assert "/api/v1/users/{name}/keys" in r.json["paths"]


# Sessions and recordings (a real container and OpenSSH client) -----------------------------


@pytest.mark.docker
def test_sessions_recording_and_kill(
    site: Site, make_container: Callable[..., str], busybox_image: str
) -> None:
    c = make_container(busybox_image)
    user = unique("ss")
    site.gw.add_user(user)
    site.gw.grant(c, user=user, rights="shell,exec", logins="app")
    env = dict(os.environ, TERM="xterm-256color")
    with PtyProcess(site.gw.ssh_cmd(f"{user}+{c}", extra_opts=["-tt"]), env=env) as p:
        p.send(b"echo API$((6*7))\r")
        p.read_until(b"API42")
        p.send(b"exit\r")
        assert p.wait() == 0
    (shell,) = site.read("GET", f"/sessions?user={user}").json["items"]
    assert shell["kind"] == "shell" and shell["container"] == c and shell["recording"]
    detail = site.read("GET", f"/sessions/{shell['id'][:8]}")
    assert detail.status == 200 and detail.json["id"] == shell["id"]
    assert wait_until(lambda: site.read("GET", f"/recordings/{shell['id']}").status == 200, 30)
    cast = site.read("GET", f"/recordings/{shell['id']}")
    assert cast.headers["Content-Type"].startswith("application/x-asciicast")
    lines = cast.body.decode().splitlines()
    assert json.loads(lines[0])["version"] == 2 and "API42" in cast.body.decode()

    proc = subprocess.Popen(
        site.gw.ssh_cmd(f"{user}+{c}", "sleep 100"),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert wait_until(
            lambda: len(site.read("GET", f"/sessions?user={user}&active=true").json["items"]) == 1,
            timeout=60,
        )
        (live,) = site.read("GET", f"/sessions?user={user}&active=true").json["items"]
        assert site.read("POST", f"/sessions/{live['id']}/kill").status == 403
        r = site.admin("POST", f"/sessions/{live['id']}/kill", {"wait": 15})
        assert r.status == 202 and r.json["kill_requested"] is True
        _, err = proc.communicate(timeout=60)
        assert "administrator" in err.decode("utf-8", "replace")
        assert site.admin("POST", f"/sessions/{live['id']}/kill").status == 409  # ended
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    kills = site.read("GET", f"/audit?session={live['id']}&kind=admin").json["items"]
    assert [k["actor"] for k in kills] == [f"token:{site.admin_name}"]


# Engines (last: while one is configured the gateway serves the configured engines only) ------


@pytest.mark.docker
def test_engines(site: Site, tmp_path: Path) -> None:
    assert site.read("GET", "/engines").json == {"items": [], "more": False}
    up, down = unique("up").lower(), unique("down").lower()
    try:
        r = site.admin("POST", "/engines", {"name": up, "url": "unix:///var/run/docker.sock"})
        assert r.status == 201, r.body
        assert r.json["name"] == up and r.json["state"] == "up" and r.json["version"]
        missing = f"unix://{tmp_path}/no-docker.sock"
        assert site.admin("POST", "/engines", {"name": down, "url": missing}).status == 201
        assert site.admin("POST", "/engines", {"name": up, "url": missing}).status == 409
        items = {e["name"]: e for e in site.read("GET", "/engines").json["items"]}
        assert items[up]["state"] == "up" and items[up]["version"] and not items[up]["error"]
        assert items[down]["state"] == "down" and items[down]["error"]
        assert items[down]["url"] == missing and items[down]["version"] == ""
        cli = json.loads(site.gw.cli("engine", "list", "--json").stdout)
        api = site.read("GET", "/engines").json["items"]
        for doc in (*cli, *api):  # the count may change between the two looks
            doc.pop("containers")
        assert cli == api

        assert site.read("POST", "/engines", {"name": "ro", "url": missing}).status == 403
        assert site.read("DELETE", f"/engines/{down}").status == 403

        tcp = {"name": "t", "url": "tcp://127.0.0.1:1"}
        for body, field in [
            ({"name": "Bad!", "url": missing}, "name"),
            ({"name": "ok", "url": "http://x"}, "url"),
            ({"name": "ok", "url": 5}, "url"),
            ({**tcp, "tls_ca": str(tmp_path / "none.pem")}, "tls_ca"),
            ({**tcp, "tls_ca": "/etc/hostname", "tls_cert": "/etc/hostname", "tls_key": "/x"},
             "tls_key"),
            ({"name": "ok", "url": missing, "extra": 1}, "extra"),
        ]:  # fmt: skip
            r = site.admin("POST", "/engines", body)
            assert r.status == 422 and r.error["field"] == field, (body, r.body)
        assert site.read("GET", "/engines/x").status in (404, 405)
        assert site.admin("DELETE", f"/engines/{down}").status == 204
        assert site.admin("DELETE", f"/engines/{down}").status == 404
    finally:
        for name in (up, down):
            site.admin("DELETE", f"/engines/{name}")
    assert site.read("GET", "/engines").json["items"] == []
    events = site.read("GET", "/audit?kind=admin&limit=1000").json["items"]
    mine = [e for e in events if e["detail"].get("engine") in (up, down)]
    assert [(e["detail"]["action"], e["detail"]["engine"]) for e in mine] == [
        ("engine.add", up), ("engine.add", down), ("engine.remove", down), ("engine.remove", up)
    ]  # fmt: skip
    assert {e["actor"] for e in mine} == {f"token:{site.admin_name}"}
