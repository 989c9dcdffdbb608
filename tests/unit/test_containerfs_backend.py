"""containerfs without a container: backend selection, the archive backend over a fake engine."""

from __future__ import annotations

import errno
import stat as statmod
from collections.abc import AsyncIterator, Mapping, Sequence

import pytest

from gateway.containerfs import ContainerFS, ContainerGone, FSError, NoShell
from gateway.containerfs.archive import SPOOL_MEMORY, ArchiveBackend, ArchiveWriteFile
from gateway.containerfs.backend import Attrs, Where, archive_refusal, is_root_login
from gateway.containerfs.shellfs import ShellBackend
from gateway.containerfs.tar import END_OF_ARCHIVE, REGULAR, padding, tar_header
from gateway.engines.base import STDOUT, ArchivePathError, Container, PathStat
from gateway.errors import EngineUnavailable

BOX = Container(id="f" * 64, name="box", image="noshell", state="running")
NOT_FOUND = b'OCI runtime exec failed: exec: "sh": executable file not found in $PATH: unknown'


class NoShellStream:
    """An exec in an image without sh: the runtime's complaint on stdout, exit code 126."""

    exec_id = "e" * 64
    tty = False

    def __init__(self) -> None:
        self._out: list[tuple[int, bytes] | None] = [(STDOUT, NOT_FOUND + b"\r\n"), None]

    async def read(self) -> tuple[int, bytes] | None:
        return self._out.pop(0) if self._out else None

    async def write(self, data: bytes) -> None:
        return None

    def write_eof(self) -> None:
        return None

    async def resize(self, rows: int, cols: int) -> bool:
        return False

    async def wait(self, timeout: float = 10.0) -> int:
        return 126

    async def close(self) -> None:
        return None


class Body:
    """A tar stream handed out in small chunks."""

    def __init__(self, data: bytes, chunk: int = 1000) -> None:
        self._parts = [data[i : i + chunk] for i in range(0, len(data), chunk)]
        self.closed = False

    async def read(self) -> bytes | None:
        return self._parts.pop(0) if self._parts else None

    async def close(self) -> None:
        self.closed = True


class FakeEngine:
    """What containerfs uses of an engine, for an image without a shell: files live in ``stats``
    and ``files``; ``fail`` makes the archive calls fail."""

    def __init__(self) -> None:
        self.stats: dict[bytes, PathStat] = {
            b"/root": PathStat("root", 4096, statmod.S_IFDIR | 0o700, 0),
        }
        self.files: dict[bytes, bytes] = {}
        self.puts: list[tuple[bytes, bytes]] = []
        self.bodies: list[Body] = []
        self.fail: BaseException | None = None

    async def exec(
        self,
        container_id: str,
        argv: Sequence[str],
        *,
        user: str = "",
        env: Mapping[str, str] | None = None,
        tty: bool = False,
        workdir: str | None = None,
        stdin: bool = True,
    ) -> NoShellStream:
        return NoShellStream()

    async def archive_stat(self, container_id: str, path: bytes) -> PathStat:
        if self.fail is not None:
            raise self.fail
        if path not in self.stats:
            raise ArchivePathError(errno.ENOENT)
        return self.stats[path]

    async def archive_get(self, container_id: str, path: bytes) -> Body:
        if self.fail is not None:
            raise self.fail
        data = self.files[path]
        name = path.rpartition(b"/")[2]
        tar = tar_header(name, type=REGULAR, size=len(data), mode=0o644, mtime=0)
        body = Body(tar + data + padding(len(data)) + END_OF_ARCHIVE)
        self.bodies.append(body)
        return body

    async def archive_put(
        self, container_id: str, folder: bytes, body: AsyncIterator[bytes]
    ) -> None:
        self.puts.append((folder, b"".join([part async for part in body])))


def test_archive_refusal() -> None:
    assert archive_refusal("root", False) is None
    assert archive_refusal("0", False) is None
    assert archive_refusal("root:wheel", False) is None
    assert archive_refusal("0:0", False) is None
    rules = archive_refusal("root", True)
    assert isinstance(rules, NoShell) and "path rules" in rules.user_message
    for login in ("app", "1000", "rooty", "", "www-data:0"):
        refusal = archive_refusal(login, False)
        assert isinstance(refusal, NoShell) and "only the root login" in refusal.user_message
    assert is_root_login("root") and not is_root_login("toor")


def test_where_and_attrs() -> None:
    assert Where.of(b"/srv/a/", 0) == Where(b"/srv", b"a", 0)
    assert Where.of(b"/", 1).real == b"/"
    assert Where.of(b"/top", 0) == Where(b"/", b"top", 0)
    assert Where.of(b"/srv/a", 1).join(b"b") == b"/srv/b"
    assert Attrs(size=5, mode=0o100644, mtime=7).args() == (b"5", b"", b"", b"644", b"", b"7")


async def test_an_image_without_a_shell_uses_the_archive_api_for_root() -> None:
    fs = ContainerFS(FakeEngine(), BOX, "root")
    assert isinstance(fs.backend, ShellBackend) and "NOT STARTED" in repr(fs)
    info = await fs.start()
    assert isinstance(fs.backend, ArchiveBackend) and fs.archive is fs.backend
    assert info.home == b"/root" and fs.cwd == b"/root" and not fs.has_tool("tar")
    assert "ArchiveBackend" in repr(fs)
    await fs.close()


async def test_the_start_directory_is_slash_without_a_root_home() -> None:
    engine = FakeEngine()
    del engine.stats[b"/root"]
    fs = ContainerFS(engine, BOX, "0")
    assert (await fs.start()).home == b"/" and fs.cwd == b"/"
    await fs.close()


@pytest.mark.parametrize(
    ("login", "paths", "why"),
    [("app", (), "only the root login"), ("root", ("/srv",), "path rules")],
)
async def test_an_image_without_a_shell_is_refused(
    login: str, paths: tuple[str, ...], why: str
) -> None:
    fs = ContainerFS(FakeEngine(), BOX, login, paths)
    with pytest.raises(NoShell) as e:
        await fs.start()
    assert why in e.value.user_message and fs.archive is None
    helper = fs.backend.helper.first  # type: ignore[attr-defined]
    assert repr(helper) == f"<ShellHelper {login}@ffffffffffff [DEAD]>"
    await fs.close()
    assert repr(helper) == f"<ShellHelper {login}@ffffffffffff [CLOSED]>"


async def test_engine_errors_become_file_errors() -> None:
    engine = FakeEngine()
    engine.files[b"/root/f"] = b"x" * 10
    engine.stats[b"/root/f"] = PathStat("f", 10, statmod.S_IFREG | 0o644, 0)
    fs = ContainerFS(engine, BOX, "root")
    await fs.start()
    f = await fs.open_read(b"f")
    with pytest.raises(FSError) as e:
        await fs.stat(b"missing")
    assert e.value.code == errno.ENOENT and e.value.path == b"missing"
    engine.fail = EngineUnavailable("Docker engine unreachable at unix:///x: ClientError")
    with pytest.raises(FSError) as e:
        await fs.stat(b"/root")
    assert e.value.code == errno.EIO and "did not answer" in e.value.user_message
    assert "unix://" not in e.value.user_message
    with pytest.raises(ContainerGone):  # a read's stream: the session's link is gone
        await f.read(0, 10)
    engine.fail = None
    for op in (fs.remove(b"/root/x"), fs.rename(b"/a", b"/b", False), fs.statvfs(b"/")):
        with pytest.raises(FSError) as e:
            await op
        assert e.value.code == errno.EOPNOTSUPP and "without a shell" in e.value.user_message
    assert await fs.names() == ({}, {})
    await fs.close()


async def test_reads_stream_the_tar_member_and_skip_to_an_offset() -> None:
    engine = FakeEngine()
    data = bytes(range(256)) * 40
    engine.files[b"/root/f"] = data
    engine.stats[b"/root/f"] = PathStat("f", len(data), statmod.S_IFREG | 0o644, 0)
    fs = ContainerFS(engine, BOX, "root")
    await fs.start()
    f = await fs.open_read(b"f")
    assert await f.read(5000, 100) == data[5000:5100]
    assert "STREAMING" in repr(f)
    assert await f.read(5100, 1 << 20) == data[5100:]
    assert await f.read(0, 10) == data[:10]  # backwards: a new stream from the start
    assert engine.bodies[0].closed and len(engine.bodies) == 2
    await f.close()
    assert engine.bodies[1].closed and "CLOSED" in repr(f)


async def test_uploads_spool_and_go_to_disk_at_a_gap() -> None:
    engine = FakeEngine()
    fs = ContainerFS(engine, BOX, "root")
    await fs.start()
    w = await fs.open_write(
        b"up", create=True, truncate=True, exclusive=False, append=False, readable=True,
        mode=0o600,
    )  # fmt: skip
    assert isinstance(w, ArchiveWriteFile)
    await w.write(0, b"abc")
    assert not w._spool._rolled  # small and contiguous: in memory
    await w.write(SPOOL_MEMORY * 4, b"z")  # a gap: a hole on disk, never the gap in memory
    assert w._spool._rolled
    await w.setstat(size=3)
    assert await w.read(0, 10) == b"abc" and (await w.fstat()).mode == statmod.S_IFREG | 0o600
    await w.close()
    folder, tar = engine.puts[0]
    assert folder == b"/root" and b"up" in tar[:100] and tar[512:515] == b"abc"
    aborted = await fs.open_write(
        b"gone", create=True, truncate=True, exclusive=False, append=False, readable=False,
        mode=None,
    )  # fmt: skip
    await aborted.write(0, b"never")
    await aborted.abort()
    assert len(engine.puts) == 1  # an upload given up never reaches the container
    await fs.close()
