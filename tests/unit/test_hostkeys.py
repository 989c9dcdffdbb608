"""Host keys in SSHGW_HOST_KEY_DIR: generated only into an empty directory, never beside keys
that are there, the same keys for replicas that start at once, private files."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path

import asyncssh
import pytest

from gateway.config import Settings
from gateway.ssh.hostkeys import HOST_KEY_FILES, HostKeyError, ensure_host_keys, fingerprints


def _prints(keys: list[asyncssh.SSHKey]) -> list[str]:
    return [k.get_fingerprint("sha256") for k in keys]


def test_host_key_dir_defaults_to_the_data_dir(tmp_path: Path) -> None:
    s = Settings(data_dir=tmp_path / "data")
    assert s.effective_host_key_dir == tmp_path / "data"
    s = Settings(data_dir=tmp_path / "data", host_key_dir=tmp_path / "keys")
    assert s.effective_host_key_dir == tmp_path / "keys"


def test_empty_directory_gets_private_keys_once(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    first = ensure_host_keys(key_dir)
    assert [k.get_algorithm() for k in first] == [alg for _, alg in HOST_KEY_FILES]
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700
    for name, _alg in HOST_KEY_FILES:
        assert stat.S_IMODE((key_dir / name).stat().st_mode) == 0o600
        assert (
            (key_dir / f"{name}.pub")
            .read_bytes()
            .startswith(b"ecdsa-sha2" if "ecdsa" in name else b"ssh-ed25519")
        )
    assert _prints(ensure_host_keys(key_dir)) == _prints(first)
    # Nothing but the keys, their .pub files and the lock: no temporary file left behind.
    names = sorted(p.name for p in key_dir.iterdir())
    expected = sorted([n for n, _ in HOST_KEY_FILES] + [f"{n}.pub" for n, _ in HOST_KEY_FILES])
    assert names == sorted([*expected, ".host_keys.lock"])


def test_keys_found_there_are_used_and_none_is_added(tmp_path: Path) -> None:
    # A mounted secret with only an ed25519 key: every replica shows exactly that key.
    key = asyncssh.generate_private_key("ssh-ed25519")
    (tmp_path / "ssh_host_ed25519_key").write_bytes(key.export_private_key())
    os.chmod(tmp_path / "ssh_host_ed25519_key", 0o400)
    keys = ensure_host_keys(tmp_path)
    assert _prints(keys) == [key.get_fingerprint("sha256")]
    assert not (tmp_path / "ssh_host_ecdsa_key").exists()
    assert fingerprints(tmp_path) == [("ssh-ed25519", key.get_fingerprint("sha256"))]


def test_a_key_open_to_others_is_made_private(tmp_path: Path) -> None:
    ensure_host_keys(tmp_path)
    path = tmp_path / HOST_KEY_FILES[0][0]
    os.chmod(path, 0o644)
    ensure_host_keys(tmp_path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("content", [b"", b"not a key\n", b"x" * (70 << 10)])
def test_a_broken_key_file_is_one_clear_error(tmp_path: Path, content: bytes) -> None:
    (tmp_path / HOST_KEY_FILES[0][0]).write_bytes(content)
    with pytest.raises(HostKeyError, match="is not a private key"):
        ensure_host_keys(tmp_path)


def test_an_unusable_directory_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(HostKeyError, match="cannot read or create host keys"):
        ensure_host_keys(tmp_path / "file" / "keys")


def _replica(
    key_dir: str, start: multiprocessing.synchronize.Event, out: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    start.wait()
    out.put(_prints(ensure_host_keys(Path(key_dir))))


def test_replicas_starting_at_once_on_an_empty_directory_agree(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    for round_ in range(5):
        key_dir = tmp_path / f"r{round_}"
        start = ctx.Event()
        out: multiprocessing.Queue[list[str]] = ctx.Queue()
        procs = [ctx.Process(target=_replica, args=(str(key_dir), start, out)) for _ in range(6)]
        for p in procs:
            p.start()
        start.set()
        seen = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert all(s == seen[0] for s in seen), seen
        assert len(seen[0]) == len(HOST_KEY_FILES)
        assert _prints(ensure_host_keys(key_dir)) == seen[0]
