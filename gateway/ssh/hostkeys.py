"""Host keys: loaded once from the host key directory, generated there only when it holds none.

The directory is ``SSHGW_HOST_KEY_DIR`` (default: the data directory). Replicas of the gateway
behind one TCP balancer mount the same directory (a Kubernetes secret, a shared volume) and so
present the same keys: a client going through the balancer never sees a change.

- A directory that holds any host key is only read: the gateway never generates a key beside
  keys it found (a secret with only an ed25519 key stays that; every replica shows the same set).
- An empty directory gets an ed25519 and an ECDSA P-256 key. Two replicas that start at once on
  it are safe: reading and generation run under an exclusive ``flock`` on ``.host_keys.lock``
  in the directory, and each key is written (0600, fsync'ed) under a temporary name and
  *linked* to its final name, which never replaces a file: the loser of a race reads the
  winner's key. Where the lock cannot be taken (a read-only mount, a file system without
  locks), the links alone decide.
- A key file that group or others can read is made 0600; when it cannot be (a read-only
  mount), the gateway refuses to start, as sshd does with an unprotected key.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

import asyncssh

from gateway.errors import GatewayError

log = logging.getLogger(__name__)

HOST_KEY_FILES = (
    ("ssh_host_ed25519_key", "ssh-ed25519"),
    ("ssh_host_ecdsa_key", "ecdsa-sha2-nistp256"),
)
LOCK_FILE = ".host_keys.lock"
KEY_FILE_MAX = 64 << 10  # a host key file is a few hundred bytes
# link() is not supported here: write the final name with O_EXCL instead.
_NO_LINK = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK}


class HostKeyError(GatewayError):
    """A host key cannot be read, made private or created."""


def ensure_host_keys(key_dir: Path) -> list[asyncssh.SSHKey]:
    """The host keys in ``key_dir``; when it holds none, new ones (ed25519 and ECDSA P-256).

    Raises :class:`HostKeyError` (one line for a person) when that fails.
    """
    try:
        key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # Read under the lock too: a replica generating right now may have linked one key of
        # the set and not yet the next.
        with _generation_lock(key_dir):
            keys = _load(key_dir)
            if keys:
                return keys
            for name, alg in HOST_KEY_FILES:
                _create(key_dir, name, alg)
            return _load(key_dir)
    except OSError as exc:
        raise HostKeyError(
            f"cannot read or create host keys in {key_dir}: {exc.strerror or exc}"
        ) from None


def _load(key_dir: Path) -> list[asyncssh.SSHKey]:
    """The host keys present in ``key_dir`` (in HOST_KEY_FILES order)."""
    keys = []
    for name, _alg in HOST_KEY_FILES:
        path = key_dir / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        with os.fdopen(fd, "rb") as f:
            mode = stat.S_IMODE(os.fstat(fd).st_mode)
            if mode & 0o077:
                try:
                    os.fchmod(fd, 0o600)
                except OSError as exc:
                    raise HostKeyError(
                        f"host key {path} is open to other users (mode {mode:04o}) and cannot "
                        f"be made private: {exc.strerror or exc} (mount it with mode 0400 or 0600)"
                    ) from None
                log.warning("host key %s was mode %04o; made it 0600", path, mode)
            data = f.read(KEY_FILE_MAX + 1)
        try:
            if len(data) > KEY_FILE_MAX:
                raise asyncssh.KeyImportError("too large")
            keys.append(asyncssh.import_private_key(data))
        except (asyncssh.KeyImportError, ValueError) as exc:
            raise HostKeyError(f"host key {path} is not a private key: {exc}") from None
    return keys


@contextlib.contextmanager
def _generation_lock(key_dir: Path) -> Iterator[None]:
    """An exclusive flock on the directory's lock file, when the file system allows one."""
    try:
        fd = os.open(key_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        log.debug("host keys: no lock file in %s (%s); relying on link()", key_dir, exc)
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:
            log.debug("host keys: flock on %s failed (%s); relying on link()", key_dir, exc)
        yield
    finally:
        os.close(fd)  # releases the lock


def _create(key_dir: Path, name: str, alg: str) -> None:
    """Generate a key and put it at ``name`` unless a key is there already (then keep that)."""
    key = asyncssh.generate_private_key(alg)
    final = key_dir / name
    tmp = key_dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    _write_new(tmp, key.export_private_key())
    try:
        os.link(tmp, final)
    except FileExistsError:
        return  # another replica won: its key is the one loaded
    except OSError as exc:
        if exc.errno not in _NO_LINK:
            raise
        try:
            _write_new(final, key.export_private_key())
        except FileExistsError:
            return
    finally:
        tmp.unlink(missing_ok=True)
    pub_tmp = key_dir / f".{name}.pub.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    _write_new(pub_tmp, key.export_public_key())
    os.replace(pub_tmp, key_dir / f"{name}.pub")
    log.info("generated host key %s in %s", alg, key_dir)


def _write_new(path: Path, data: bytes) -> None:
    """Create ``path`` (0600, never an existing file) holding ``data``, on disk when it returns."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def fingerprints(key_dir: Path) -> list[tuple[str, str]]:
    """(algorithm, SHA256 fingerprint) of each host key, creating them when missing."""
    return [(k.get_algorithm(), k.get_fingerprint("sha256")) for k in ensure_host_keys(key_dir)]


def known_hosts_lines(keys: list[asyncssh.SSHKey], names: str) -> list[str]:
    """``NAMES ALGORITHM BASE64`` for each key: what a client adds to its known_hosts (for
    ProxyJump, the containers' names or a HostKeyAlias: every container shows these keys)."""
    lines = []
    for key in keys:
        alg, blob = key.export_public_key("openssh").decode("ascii").split()[:2]
        lines.append(f"{names} {alg} {blob}")
    return lines
