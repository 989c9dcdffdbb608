"""gateway.engines.docker against the real Docker engine (no mocks)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable

import pytest

from gateway.engines.docker import STDERR, STDOUT, DockerEngine, ExecStream
from gateway.errors import EngineUnavailable, ExecFailed, NoSuchContainer

pytestmark = pytest.mark.docker

# Guards against a hang (a stalled pool, a lost EOF); not a timing check.
HANG = 120.0

MakeContainer = Callable[..., str]


def docker(*args: str) -> str:
    res = subprocess.run(["docker", *args], capture_output=True, text=True, check=True, timeout=120)
    return res.stdout.strip()


def container_id(name: str) -> str:
    return docker("inspect", "-f", "{{.Id}}", name)


@pytest.fixture
async def engine(docker_host: str) -> AsyncIterator[DockerEngine]:
    eng = DockerEngine(docker_host)
    try:
        yield eng
    finally:
        await eng.close()


@pytest.fixture
def box(make_container: MakeContainer, busybox_image: str) -> str:
    """A running busybox container; returns its name."""
    return make_container(busybox_image, labels={"team": "blue", "tier": "web"})


async def drain(st: ExecStream) -> tuple[bytes, bytes]:
    out = bytearray()
    err = bytearray()
    while (msg := await st.read()) is not None:
        kind, data = msg
        (out if kind == STDOUT else err).extend(data)
    return bytes(out), bytes(err)


# Container directory -------------------------------------------------------------------------


async def test_resolve_by_name(engine: DockerEngine, box: str, busybox_image: str) -> None:
    c = await engine.resolve(box)
    assert c.name == box
    assert c.id == container_id(box)
    assert c.short_id == c.id[:12]
    assert c.image == busybox_image
    assert c.state == "running"
    assert c.running
    assert c.labels["team"] == "blue"
    assert c.labels["tier"] == "web"
    assert c.user == ""


async def test_resolve_reports_image_user(
    engine: DockerEngine, make_container: MakeContainer, busybox_image: str
) -> None:
    name = make_container(busybox_image, user="app")
    assert (await engine.resolve(name)).user == "app"


async def test_resolve_by_unique_id_prefix(engine: DockerEngine, box: str) -> None:
    cid = container_id(box)
    for ref in (cid, cid[:12], cid[:20]):
        c = await engine.resolve(ref)
        assert c.id == cid
        assert c.name == box


async def test_resolve_unknown_name(engine: DockerEngine) -> None:
    with pytest.raises(NoSuchContainer) as exc:
        await engine.resolve("sshgw-no-such-container-4711")
    assert "sshgw-no-such-container-4711" in exc.value.user_message


@pytest.mark.parametrize(
    "ref",
    ["", ".", "..", "../etc", "a/b", "/abc", "web?all=1", "web#x", "%2e%2e", "web json", "-rf"],
)
async def test_resolve_refuses_hostile_refs(engine: DockerEngine, ref: str) -> None:
    with pytest.raises(NoSuchContainer):
        await engine.resolve(ref)


async def test_resolve_refuses_too_short_prefix(engine: DockerEngine, box: str) -> None:
    cid = container_id(box)
    all_ids = docker("ps", "-aq", "--no-trunc").split()
    # Only prefixes that are unique, so the refusal is the length rule and not an ambiguity.
    for n in (1, 2, 3):
        prefix = cid[:n]
        if sum(i.startswith(prefix) for i in all_ids) != 1:
            continue
        with pytest.raises(NoSuchContainer):
            await engine.resolve(prefix)
    with pytest.raises(NoSuchContainer):
        await engine.resolve(cid[:3])


async def test_resolve_refuses_ambiguous_prefix(
    engine: DockerEngine, make_container: MakeContainer, busybox_image: str
) -> None:
    # Created containers get random IDs: make some until two of them share a first hex digit
    # (at most 17 by pigeonhole), then ask for that digit.
    seen: dict[str, str] = {}
    shared = None
    for _ in range(17):
        cid = container_id(make_container(busybox_image))
        if cid[0] in seen:
            shared = cid[0]
            break
        seen[cid[0]] = cid
    assert shared is not None
    with pytest.raises(NoSuchContainer) as exc:
        await engine.resolve(shared)
    # The answer must not leak engine internals ("Multiple IDs found ...").
    assert "multiple" not in exc.value.user_message.lower()


async def test_list_containers(
    engine: DockerEngine, make_container: MakeContainer, busybox_image: str
) -> None:
    running = make_container(busybox_image, labels={"sshgw.role": "db"})
    stopped = make_container(busybox_image)
    docker("stop", stopped)

    everything = {c.name: c for c in await engine.list_containers()}
    assert everything[running].state == "running"
    assert everything[running].labels["sshgw.role"] == "db"
    assert everything[running].id == container_id(running)
    assert everything[running].image == busybox_image
    assert everything[stopped].state == "exited"
    assert not everything[stopped].running

    only_running = {c.name for c in await engine.list_containers(all=False)}
    assert running in only_running
    assert stopped not in only_running

    names = [c.name for c in await engine.list_containers()]
    assert names == sorted(names)


async def test_resolve_stopped_container(
    engine: DockerEngine, make_container: MakeContainer, busybox_image: str
) -> None:
    name = make_container(busybox_image)
    docker("stop", name)
    c = await engine.resolve(name)
    assert c.state == "exited"
    assert not c.running


async def test_ping(engine: DockerEngine) -> None:
    await engine.ping()


# Exec ----------------------------------------------------------------------------------------


async def test_exec_binary_round_trip_small(engine: DockerEngine, box: str) -> None:
    payload = bytes(range(256))
    code, out, err = await engine.run(box, ["cat"], input=payload)
    assert (code, out, err) == (0, payload, b"")


async def test_exec_binary_round_trip_streaming(engine: DockerEngine, box: str) -> None:
    """4 MiB of every byte value through cat, writing and reading at the same time."""
    chunk = bytes(range(256)) * 256  # 64 KiB
    payload = chunk * 64
    st = await engine.exec(container_id(box), ["cat"])

    async def feed() -> None:
        for i in range(0, len(payload), 32768):
            await st.write(payload[i : i + 32768])
        st.write_eof()

    try:
        (out, err), _ = await asyncio.wait_for(asyncio.gather(drain(st), feed()), HANG)
        code = await st.wait()
    finally:
        await st.close()
    assert len(out) == len(payload)
    assert out == payload
    assert err == b""
    assert code == 0


async def test_exec_stdin_eof_reaches_process(engine: DockerEngine, box: str) -> None:
    code, out, _ = await asyncio.wait_for(engine.run(box, ["wc", "-c"], input=b"x" * 12345), HANG)
    assert code == 0
    assert out.strip() == b"12345"


async def test_exec_empty_stdin_eof(engine: DockerEngine, box: str) -> None:
    code, out, _ = await asyncio.wait_for(engine.run(box, ["wc", "-c"], input=b""), HANG)
    assert code == 0
    assert out.strip() == b"0"


async def test_exec_write_eof_keeps_output_flowing(engine: DockerEngine, box: str) -> None:
    """After the half-close the process still writes (here: after reading everything)."""
    st = await engine.exec(box, ["sh", "-c", "cat >/dev/null; echo done; echo bye >&2"])
    try:
        await st.write(b"ignored\n" * 1000)
        st.write_eof()
        st.write_eof()  # idempotent
        out, err = await asyncio.wait_for(drain(st), HANG)
        code = await st.wait()
    finally:
        await st.close()
        await st.close()  # idempotent
    assert (out, err, code) == (b"done\n", b"bye\n", 0)


async def test_exec_without_stdin(engine: DockerEngine, box: str) -> None:
    st = await engine.exec(box, ["sh", "-c", "echo hi"], stdin=False)
    try:
        out, _ = await asyncio.wait_for(drain(st), HANG)
        assert out == b"hi\n"
        assert await st.wait() == 0
    finally:
        await st.close()


async def test_exec_stdout_stderr_separate(engine: DockerEngine, box: str) -> None:
    script = "printf 'to-out\\377'; printf 'to-err\\200' >&2; printf more; printf again >&2"
    code, out, err = await engine.run(box, ["sh", "-c", script])
    assert code == 0
    assert out == b"to-out\xffmore"
    assert err == b"to-err\x80again"


async def test_exec_stream_kinds(engine: DockerEngine, box: str) -> None:
    st = await engine.exec(box, ["sh", "-c", "echo a; echo b >&2"], stdin=False)
    try:
        kinds = set()
        while (msg := await st.read()) is not None:
            kinds.add(msg[0])
        assert kinds == {STDOUT, STDERR}
    finally:
        await st.close()


@pytest.mark.parametrize("status", [0, 1, 3, 42, 255])
async def test_exec_exit_code_passthrough(engine: DockerEngine, box: str, status: int) -> None:
    code, _, _ = await engine.run(box, ["sh", "-c", f"exit {status}"])
    assert code == status


async def test_exec_signal_death_is_128_plus_n(engine: DockerEngine, box: str) -> None:
    code, _, _ = await engine.run(box, ["sh", "-c", "kill -9 $$"])
    assert code == 128 + 9


async def test_exec_missing_binary(engine: DockerEngine, box: str) -> None:
    code, out, err = await engine.run(box, ["/no/such/binary"])
    assert code in (126, 127)
    assert b"no/such/binary" in out + err


async def test_exec_user_env_workdir(engine: DockerEngine, box: str) -> None:
    st = await engine.exec(
        box,
        ["sh", "-c", 'id -u; pwd; printf "%s\\n" "$GREETING"'],
        user="app",
        env={"GREETING": "hello wörld \x01"},
        workdir="/tmp",
        stdin=False,
    )
    try:
        out, err = await drain(st)
        assert await st.wait() == 0
    finally:
        await st.close()
    assert out == "1000\n/tmp\nhello wörld \x01\n".encode()
    assert err == b""


async def test_exec_tty_resize(engine: DockerEngine, box: str) -> None:
    st = await engine.exec(box, ["sh", "-c", "read line; stty size; exit 7"], tty=True)
    try:
        # Until the exec is ready the engine refuses a resize; the process waits for our line.
        for _ in range(100):
            if await st.resize(33, 101):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the TTY resize never succeeded")
        await st.write(b"go\r")
        out, err = await asyncio.wait_for(drain(st), HANG)
        code = await st.wait()
    finally:
        await st.close()
    assert b"33 101" in out
    assert err == b""  # a TTY merges the streams
    assert code == 7


async def test_many_attached_execs_do_not_stall(engine: DockerEngine, box: str) -> None:
    """101 attached execs at once: more than aiohttp's default pool of 100 connections."""
    cid = container_id(box)
    n = 101
    streams: list[ExecStream] = []
    try:
        for _ in range(n):
            streams.append(await asyncio.wait_for(engine.exec(cid, ["cat"]), HANG))
        # Every other API call still goes through while all of them hold a connection.
        await asyncio.wait_for(engine.ping(), HANG)
        assert box in {c.name for c in await asyncio.wait_for(engine.list_containers(), HANG)}
        code, out, _ = await asyncio.wait_for(engine.run(cid, ["echo", "still here"]), HANG)
        assert (code, out) == (0, b"still here\n")

        async def finish(i: int, st: ExecStream) -> tuple[bytes, int]:
            await st.write(b"%d\n" % i)
            st.write_eof()
            out, _ = await drain(st)
            return out, await st.wait()

        results = await asyncio.wait_for(
            asyncio.gather(*(finish(i, st) for i, st in enumerate(streams))), HANG
        )
        assert results == [(b"%d\n" % i, 0) for i in range(n)]
    finally:
        await asyncio.gather(*(st.close() for st in streams))


async def test_exec_in_stopped_container(
    engine: DockerEngine, make_container: MakeContainer, busybox_image: str
) -> None:
    name = make_container(busybox_image)
    cid = container_id(name)
    docker("stop", name)
    with pytest.raises(ExecFailed) as exc:
        await engine.exec(cid, ["sh", "-c", ":"])
    assert "not running" in exc.value.user_message
    assert "\n" not in exc.value.user_message


async def test_exec_in_removed_container(
    engine: DockerEngine, make_container: MakeContainer, busybox_image: str
) -> None:
    name = make_container(busybox_image)
    cid = container_id(name)
    docker("rm", "-f", name)
    with pytest.raises(NoSuchContainer):
        await engine.exec(cid, ["sh", "-c", ":"])


async def test_container_killed_mid_exec_ends_stream(
    engine: DockerEngine, make_container: MakeContainer, busybox_image: str
) -> None:
    name = make_container(busybox_image)
    st = await engine.exec(name, ["sh", "-c", "echo started; sleep 600"])
    try:
        first = await asyncio.wait_for(st.read(), HANG)
        assert first == (STDOUT, b"started\n")
        docker("kill", name)
        # The output ends (no hang) once the container is gone.
        await asyncio.wait_for(drain(st), HANG)
    finally:
        await st.close()


# Engine unreachable ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["unix:///nonexistent.sock", "tcp://127.0.0.1:1", "ssh://example.invalid"]
)
async def test_engine_unreachable(host: str) -> None:
    eng = DockerEngine(host)
    try:
        with pytest.raises(EngineUnavailable) as exc:
            await eng.ping()
        assert "\n" not in exc.value.user_message
        with pytest.raises(EngineUnavailable):
            await eng.list_containers()
        # Unreachable must not look like "no such container".
        with pytest.raises(EngineUnavailable):
            await eng.resolve("web1")
        with pytest.raises(EngineUnavailable):
            await eng.exec("web1", ["sh"])
        with pytest.raises(EngineUnavailable):
            await eng.run("web1", ["true"])
    finally:
        await eng.close()
