"""containerfs against real containers (busybox applets and Debian's GNU tools), as root and app."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from gateway.containerfs import ContainerFS, FSError, NoShell
from gateway.containerfs.fs import INLINE_BUDGET, MAX_OPEN_FILES
from gateway.engines import DockerEngine

pytestmark = pytest.mark.docker

MakeContainer = Callable[..., str]


def sh(container: str, script: str, *, user: str = "root", input: bytes | None = None) -> bytes:
    res = subprocess.run(
        ["docker", "exec", "-i", "-u", user, container, "sh", "-c", script],
        input=input or b"",
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    return res.stdout


def top(container: str) -> str:
    return subprocess.run(
        ["docker", "top", container, "-o", "pid,user,args"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout


async def wait_gone(container: str, needles: tuple[str, ...], timeout: float = 20.0) -> bool:
    """Wait until no process of the container matches (the event loop keeps running)."""
    deadline = time.monotonic() + timeout
    while True:
        procs = await asyncio.to_thread(top, container)
        if not any(n in procs for n in needles):
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)


@pytest.fixture(params=["busybox", "debian"])
def image(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(f"{request.param}_image"))


@pytest.fixture
def container(make_container: MakeContainer, image: str) -> Iterator[str]:
    c = make_container(image)
    sh(
        c,
        "mkdir -p /srv/app/sub /srv/other && echo secret > /root/secret && chmod 600 /root/secret"
        " && echo hello > /srv/app/hello && ln -s /etc /srv/app/esc && ln -s sub /srv/app/inside"
        " && chown -R 1000:1000 /srv/app && echo other > /srv/other/file",
    )
    yield c


@pytest.fixture
async def engine(docker_host: str) -> AsyncIterator[DockerEngine]:
    eng = DockerEngine(docker_host)
    yield eng
    await eng.close()


async def open_fs(
    engine: DockerEngine, name: str, login: str = "root", paths: tuple[str, ...] = ()
) -> ContainerFS:
    fs = ContainerFS(engine, await engine.resolve(name), login, paths)
    await fs.start()
    return fs


async def put(fs: ContainerFS, path: bytes, data: bytes, chunk: int = 32768) -> None:
    f = await fs.open_write(
        path, create=True, truncate=True, exclusive=False, append=False, readable=False, mode=None
    )
    for i in range(0, len(data), chunk):
        await f.write(i, data[i : i + chunk])
    await f.close()


async def get(fs: ContainerFS, path: bytes, chunk: int = 65536) -> bytes:
    f = await fs.open_read(path)
    out = bytearray()
    while True:
        piece = await f.read(len(out), chunk)
        if not piece:
            break
        out += piece
    await f.close()
    return bytes(out)


async def test_stat_and_errors(engine: DockerEngine, container: str) -> None:
    fs = await open_fs(engine, container)
    try:
        st = await fs.stat(b"/etc/passwd")
        assert st.is_file and st.uid == 0 and st.size > 0
        assert (await fs.stat(b"/srv/app/esc", follow=False)).is_symlink
        assert (await fs.stat(b"/srv/app/esc")).is_dir
        with pytest.raises(FSError) as e:
            await fs.stat(b"/nonexistent")
        assert e.value.code == errno.ENOENT
        assert e.value.user_message == "/nonexistent: No such file or directory"
        with pytest.raises(FSError) as e:
            await fs.stat(b"/etc/passwd/x")
        assert e.value.code in (errno.ENOTDIR, errno.ENOENT)
        assert fs.cwd == b"/root"
    finally:
        await fs.close()


ODD_NAMES = [
    b"sp ace",
    b"new\nline",
    b"trailing-newline\n",
    b" lead",
    "ütf-8 ☃".encode(),
    b"latin1-\xe9\xff",
    b"quote'\"q",
    b"back\\slash",
    b"-dash",
    b"$(touch pwned)`touch pwned`;touch pwned",
    b"star*?[x]",
    b"tab\there",
    b"x" * 255,
]


async def test_odd_names_round_trip(engine: DockerEngine, container: str) -> None:
    fs = await open_fs(engine, container)
    try:
        await fs.mkdir(b"/tmp/odd", None)
        for i, name in enumerate(ODD_NAMES):
            await put(fs, b"/tmp/odd/" + name, b"content %d" % i)
        await fs.symlink(b"sp ace", b"/tmp/odd/link\nname")
        listing = dict(await fs.listdir(b"/tmp/odd"))
        assert set(listing) == {b".", b"..", *ODD_NAMES, b"link\nname"}
        assert listing[b"."].is_dir and listing[b"link\nname"].is_symlink
        for i, name in enumerate(ODD_NAMES):
            assert listing[name].size == len(b"content %d" % i)
            assert await get(fs, b"/tmp/odd/" + name) == b"content %d" % i
        assert await fs.readlink(b"/tmp/odd/link\nname") == b"sp ace"
        assert await get(fs, b"/tmp/odd/link\nname") == b"content 0"
        with pytest.raises(FSError) as e:
            await fs.stat(b"/root/pwned")
        assert e.value.code == errno.ENOENT
        # no temporary files left behind
        assert not [n for n in listing if n.startswith(b".sshgw-")]
    finally:
        await fs.close()


async def test_listing_of_ten_thousand_entries(engine: DockerEngine, container: str) -> None:
    sh(
        container,
        "mkdir /tmp/many && cd /tmp/many && i=0; while [ $i -lt 10000 ]; do : > f$i; i=$((i+1)); done",
    )
    fs = await open_fs(engine, container)
    try:
        names = {n for n, _ in await fs.listdir(b"/tmp/many")}
        assert len(names) == 10002
        assert {b"f0", b"f9999", b".", b".."} <= names
    finally:
        await fs.close()


async def test_reads_small_large_and_at_offsets(engine: DockerEngine, container: str) -> None:
    big = os.urandom(3 * 1024 * 1024 + 123)
    sh(container, "cat > /tmp/big", input=big)
    sh(container, "printf small > /tmp/small")
    fs = await open_fs(engine, container)
    try:
        assert await get(fs, b"/tmp/small") == b"small"
        assert await get(fs, b"/tmp/big") == big
        f = await fs.open_read(b"/tmp/big")
        assert (await f.fstat()).size == len(big)
        # out of order: restarts, skips ahead, repeats, end of file
        for offset, size in [
            (2_000_000, 70_000),
            (100, 32768),
            (100 + 32768 + 5000, 4096),
            (100 + 32768 + 5000, 4096),
            (len(big) - 10, 4096),
            (len(big), 4096),
            (0, 1 << 20),
        ]:
            assert await f.read(offset, size) == big[offset : offset + size]
        await f.close()
        with pytest.raises(FSError) as e:
            await fs.open_read(b"/tmp")
        assert e.value.code == errno.EISDIR
    finally:
        await fs.close()
    assert await wait_gone(container, ("dd ", "tar "))


async def test_new_file_appears_only_when_complete(engine: DockerEngine, container: str) -> None:
    data = os.urandom(1024 * 1024)
    fs = await open_fs(engine, container)
    try:
        f = await fs.open_write(
            b"/tmp/new.bin",
            create=True,
            truncate=True,
            exclusive=False,
            append=False,
            readable=False,
            mode=0o640,
        )
        for i in range(0, len(data), 65536):
            await f.write(i, data[i : i + 65536])
            with pytest.raises(FSError):
                await fs.stat(b"/tmp/new.bin")
        await f.close()
        st = await fs.stat(b"/tmp/new.bin")
        assert st.size == len(data) and st.mode & 0o777 == 0o640
        assert (
            hashlib.sha256(await get(fs, b"/tmp/new.bin")).digest() == hashlib.sha256(data).digest()
        )

        # an aborted upload leaves nothing: no file, no temporary, no process
        f = await fs.open_write(
            b"/tmp/aborted.bin",
            create=True,
            truncate=True,
            exclusive=False,
            append=False,
            readable=False,
            mode=None,
        )
        for i in range(0, len(data), 65536):
            await f.write(i, data[i : i + 65536])
        await f.abort()
        with pytest.raises(FSError):
            await fs.stat(b"/tmp/aborted.bin")
        assert not [n for n, _ in await fs.listdir(b"/tmp") if n.startswith(b".sshgw-")]
    finally:
        await fs.close()
    assert await wait_gone(container, ("dd ",))


async def test_existing_file_is_written_in_place(engine: DockerEngine, container: str) -> None:
    sh(container, "printf 0123456789 > /tmp/f && chown 1000:1000 /tmp/f && chmod 664 /tmp/f")
    inode = sh(container, "stat -c %i /tmp/f")
    fs = await open_fs(engine, container)
    try:
        f = await fs.open_write(
            b"/tmp/f",
            create=True,
            truncate=False,
            exclusive=False,
            append=False,
            readable=True,
            mode=0o600,
        )
        await f.write(2, b"AB")
        assert await f.read(0, 100) == b"01AB456789"
        await f.write(20, b"far")
        await f.setstat(size=12)
        assert (await f.fstat()).size == 12
        await f.close()
        assert sh(container, "cat /tmp/f") == b"01AB456789\0\0"
        assert sh(container, "stat -c %i /tmp/f") == inode
        assert sh(container, "stat -c '%u %a' /tmp/f") == b"1000 664\n"

        f = await fs.open_write(
            b"/tmp/f",
            create=False,
            truncate=False,
            exclusive=False,
            append=True,
            readable=False,
            mode=None,
        )
        await f.write(0, b"+tail")
        await f.close()
        assert sh(container, "cat /tmp/f") == b"01AB456789\0\0+tail"

        with pytest.raises(FSError) as e:
            await fs.open_write(
                b"/tmp/f",
                create=True,
                truncate=False,
                exclusive=True,
                append=False,
                readable=False,
                mode=None,
            )
        assert e.value.code == errno.EEXIST
        with pytest.raises(FSError) as e:
            await fs.open_write(
                b"/tmp/missing",
                create=False,
                truncate=False,
                exclusive=False,
                append=False,
                readable=False,
                mode=None,
            )
        assert e.value.code == errno.ENOENT
    finally:
        await fs.close()


async def test_large_streamed_write(engine: DockerEngine, container: str) -> None:
    data = os.urandom(6 * 1024 * 1024 + 7)
    fs = await open_fs(engine, container, login="app")
    try:
        await put(fs, b"/tmp/large.bin", data)
        assert await get(fs, b"/tmp/large.bin") == data
    finally:
        await fs.close()
    out = sh(container, "sha256sum /tmp/large.bin; stat -c %u /tmp/large.bin").split()
    assert out[0].decode() == hashlib.sha256(data).hexdigest()
    assert out[-1] == b"1000"


async def test_container_permissions_apply(engine: DockerEngine, container: str) -> None:
    fs = await open_fs(engine, container, login="app")
    try:
        assert fs.cwd == b"/home/app"
        for op in (
            fs.open_read(b"/root/secret"),
            fs.listdir(b"/root"),
            fs.open_write(
                b"/root/new",
                create=True,
                truncate=True,
                exclusive=False,
                append=False,
                readable=False,
                mode=None,
            ),
            fs.mkdir(b"/etc/x", None),
            fs.remove(b"/etc/passwd"),
            fs.setstat(b"/tmp", mode=0o700),
        ):
            with pytest.raises(FSError) as e:
                await op
            assert e.value.code in (errno.EACCES, errno.EPERM), e.value.user_message
        with pytest.raises(FSError) as e:
            await fs.setstat(b"/srv/app/hello", uid=0, gid=0)
        assert e.value.code == errno.EPERM
        await fs.setstat(b"/srv/app/hello", mode=0o600, atime=1_000_000, mtime=2_000_000)
        st = await fs.stat(b"/srv/app/hello")
        assert (st.mode & 0o777, st.atime, st.mtime) == (0o600, 1_000_000, 2_000_000)
    finally:
        await fs.close()


async def test_tree_operations(engine: DockerEngine, container: str) -> None:
    fs = await open_fs(engine, container)
    try:
        await fs.mkdir(b"/tmp/t", 0o750)
        assert (await fs.stat(b"/tmp/t")).mode & 0o777 == 0o750
        await put(fs, b"/tmp/t/a", b"a")
        await fs.rename(b"/tmp/t/a", b"/tmp/t/b", overwrite=False)
        await put(fs, b"/tmp/t/c", b"c")
        with pytest.raises(FSError) as e:
            await fs.rename(b"/tmp/t/b", b"/tmp/t/c", overwrite=False)
        assert e.value.code == errno.EEXIST
        await fs.rename(b"/tmp/t/b", b"/tmp/t/c", overwrite=True)
        assert await get(fs, b"/tmp/t/c") == b"a"
        await fs.link(b"/tmp/t/c", b"/tmp/t/hard")
        assert (await fs.stat(b"/tmp/t/c")).nlink == 2
        await fs.symlink(b"c", b"/tmp/t/sym")
        assert await fs.readlink(b"/tmp/t/sym") == b"c"
        with pytest.raises(FSError) as e:
            await fs.readlink(b"/tmp/t/c")
        assert e.value.code == errno.EINVAL
        with pytest.raises(FSError) as e:
            await fs.rmdir(b"/tmp/t")
        assert e.value.code == errno.ENOTEMPTY
        with pytest.raises(FSError) as e:
            await fs.remove(b"/tmp/t")
        assert e.value.code == errno.EISDIR
        for name in (b"c", b"hard", b"sym"):
            await fs.remove(b"/tmp/t/" + name)
        await fs.rmdir(b"/tmp/t")
        assert await fs.realpath(b"/srv/app/inside/../esc") == b"/etc"
        assert await fs.realpath(b"/srv/app/esc/not-yet") == b"/etc/not-yet"
        assert await fs.realpath(b"relative") == b"/root/relative"
        v = await fs.statvfs(b"/")
        assert v.blocks > 0 and v.namemax >= 255
    finally:
        await fs.close()


async def test_path_prefixes_resolve_inside_the_container(
    engine: DockerEngine, container: str
) -> None:
    fs = await open_fs(engine, container, login="app", paths=("/srv/app",))
    try:
        assert fs.cwd == b"/srv/app"  # the home is outside: start in the allowed tree
        assert await get(fs, b"hello") == b"hello\n"
        assert (await fs.stat(b"/srv/app/esc", follow=False)).is_symlink
        await fs.mkdir(b"/srv/app/new", None)
        await put(fs, b"/srv/app/inside/x", b"x")
        names = {n for n, _ in await fs.listdir(b"/srv/app")}
        assert b".." not in names and b"hello" in names
        for path in (
            b"/etc/passwd",
            b"/srv/app/../other/file",
            b"/srv/app/esc/passwd",  # a symlink out of the tree
            b"/srv/application",
            b"/srv/app/esc",  # follows the link
        ):
            with pytest.raises(FSError) as e:
                await fs.stat(path)
            assert e.value.code == errno.EACCES, path
            assert "outside the paths" in e.value.user_message
        with pytest.raises(FSError) as e:
            await fs.rename(b"/srv/app/hello", b"/tmp/hello", overwrite=False)
        assert e.value.code == errno.EACCES
        with pytest.raises(FSError) as e:
            await put(fs, b"/srv/app/esc/evil", b"x")
        assert e.value.code == errno.EACCES
        # a link can point anywhere; following it is what is checked
        await fs.symlink(b"/etc/passwd", b"/srv/app/pw")
        with pytest.raises(FSError):
            await fs.open_read(b"/srv/app/pw")
    finally:
        await fs.close()


@pytest.mark.parametrize("kind", ["notar-image", "debian-without-tar"])
async def test_image_without_tar(
    engine: DockerEngine, make_container: MakeContainer, request: pytest.FixtureRequest, kind: str
) -> None:
    if kind == "notar-image":
        # busybox's sh may still run its built-in tar applet without the link: either way works
        c = make_container(request.getfixturevalue("notar_image"))
    else:
        c = make_container(request.getfixturevalue("debian_image"))
        sh(c, "rm -f /usr/bin/tar /bin/tar")
    data = os.urandom(2 * 1024 * 1024)
    fs = await open_fs(engine, c, login="app")
    try:
        if kind == "debian-without-tar":
            assert not fs.has_tool("tar")
        await put(fs, b"/tmp/x.bin", data)
        assert await get(fs, b"/tmp/x.bin") == data
        assert (await fs.stat(b"/tmp/x.bin")).uid == 1000
    finally:
        await fs.close()


async def test_image_without_shell_refuses_other_logins(
    engine: DockerEngine, make_container: MakeContainer, noshell_image: str
) -> None:
    c = make_container(noshell_image)
    fs = ContainerFS(engine, await engine.resolve(c), "app")
    with pytest.raises(NoShell) as e:
        await fs.start()
    assert "/bin/sh" in e.value.user_message and "root" in e.value.user_message
    await fs.close()


async def test_image_without_shell_uses_the_archive_api_for_root(
    engine: DockerEngine, make_container: MakeContainer, noshell_image: str
) -> None:
    c = make_container(noshell_image)
    data = os.urandom(3 * 1024 * 1024 + 5)
    fs = await open_fs(engine, c, login="root")
    try:
        assert fs.archive is not None and fs.cwd == b"/root"
        await fs.mkdir(b"/tmp/dir", 0o750)
        await put(fs, b"/tmp/dir/data.bin", data)
        await put(fs, "/tmp/dir/ütf \n".encode(), b"odd")
        await fs.symlink(b"data.bin", b"/tmp/dir/link")
        listing = dict(await fs.listdir(b"/tmp/dir"))
        assert set(listing) == {b".", b"data.bin", "ütf \n".encode(), b"link"}
        assert listing[b"data.bin"].size == len(data) and listing[b"link"].is_symlink
        assert (await fs.stat(b"/tmp/dir")).mode & 0o777 == 0o750
        assert await get(fs, b"/tmp/dir/data.bin") == data
        assert await get(fs, b"/tmp/dir/link") == data
        assert await fs.readlink(b"/tmp/dir/link") == b"data.bin"
        assert await fs.realpath(b"/tmp/dir/link") == b"/tmp/dir/data.bin"
        f = await fs.open_read(b"/tmp/dir/data.bin")
        assert await f.read(2_000_000, 1000) == data[2_000_000:2_001_000]
        await f.close()
        with pytest.raises(FSError) as e:
            await fs.stat(b"/tmp/dir/missing")
        assert e.value.code == errno.ENOENT
        with pytest.raises(FSError) as e:
            await fs.mkdir(b"/tmp/dir", None)
        assert e.value.code == errno.EEXIST
        for op in (
            fs.remove(b"/tmp/dir/data.bin"),
            fs.rename(b"/tmp/dir/data.bin", b"/tmp/x", overwrite=False),
            fs.setstat(b"/tmp/dir/data.bin", mode=0o600),
        ):
            with pytest.raises(FSError) as e:
                await op
            assert e.value.code == errno.EOPNOTSUPP and "without a shell" in e.value.user_message
        # an upload that is given up never reaches the container
        w = await fs.open_write(
            b"/tmp/dir/aborted",
            create=True,
            truncate=True,
            exclusive=False,
            append=False,
            readable=False,
            mode=None,
        )
        await w.write(0, b"partial")
        await w.abort()
        with pytest.raises(FSError):
            await fs.stat(b"/tmp/dir/aborted")
    finally:
        await fs.close()


async def test_unknown_login_is_reported(engine: DockerEngine, container: str) -> None:
    fs = ContainerFS(engine, await engine.resolve(container), "nosuchuser")
    with pytest.raises(FSError) as e:
        await fs.start()
    assert "nosuchuser" in e.value.user_message
    await fs.close()


async def test_close_releases_every_process(engine: DockerEngine, container: str) -> None:
    sh(container, "dd if=/dev/zero of=/tmp/z bs=1M count=20 2>/dev/null")
    fs = await open_fs(engine, container, login="app")
    f = await fs.open_read(b"/tmp/z")
    assert len(await f.read(0, 65536)) == 65536  # a stream is running, half read
    w = await fs.open_write(
        b"/tmp/w",
        create=True,
        truncate=True,
        exclusive=False,
        append=False,
        readable=False,
        mode=None,
    )
    await w.write(0, b"x" * (1024 * 1024))  # a writer process is running
    assert "sh -c" in await asyncio.to_thread(top, container)
    await fs.close()
    # the processes end on their own shortly after (a signal, the end of their input)
    assert await wait_gone(container, ("sh -c", "dd ", "tar ")), top(container)


async def test_container_stopped_mid_session(
    engine: DockerEngine, make_container: MakeContainer, busybox_image: str
) -> None:
    c = make_container(busybox_image)
    sh(c, "dd if=/dev/zero of=/tmp/z bs=1M count=50 2>/dev/null")
    fs = await open_fs(engine, c)
    try:
        f = await fs.open_read(b"/tmp/z")
        assert len(await f.read(0, 65536)) == 65536
        await asyncio.to_thread(
            subprocess.run, ["docker", "kill", c], capture_output=True, timeout=60, check=True
        )
        # every operation fails with a clear message; nothing hangs
        async with asyncio.timeout(60):
            with pytest.raises(FSError):
                await f.read(65536, 8 << 20)
                await f.read(65536 + (8 << 20), 8 << 20)
            for _ in range(2):
                with pytest.raises(FSError) as e:
                    await fs.stat(b"/etc/passwd")
            assert "not running" in e.value.user_message or "lost" in e.value.user_message
    finally:
        await fs.close()


async def test_open_files_are_bounded(engine: DockerEngine, container: str) -> None:
    sh(container, "head -c 400000 /dev/urandom > /tmp/small")
    fs = await open_fs(engine, container)
    files = []
    try:
        for _ in range(MAX_OPEN_FILES):
            files.append(await fs.open_read(b"/tmp/small"))
        # whole small files are held in memory only within the session's budget
        assert sum(f.held for f in files) <= INLINE_BUDGET
        assert await files[-1].read(0, 10) == await files[0].read(0, 10)
        with pytest.raises(FSError) as e:
            await fs.open_read(b"/tmp/small")
        assert e.value.code == errno.EMFILE
        for f in files:
            await f.close()
        await (await fs.open_read(b"/tmp/small")).close()
    finally:
        await fs.close()
