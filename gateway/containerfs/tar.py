"""A small, strict, streaming tar codec. Pure: bytes in, events out; no file system access.

Tar that comes out of a container is hostile input (kubectl cp CVE-2018-1002100,
CVE-2019-1002101, CVE-2019-11246). :class:`TarReader` parses it incrementally in memory with
bounded buffering and turns anything unexpected into :class:`TarError`: bad checksums, bad
numbers, sizes on members that carry no data, oversized name records, sparse or multi-volume
members, data after the end-of-archive marker's first block, a truncated stream. It never
decides what is *wanted*: callers check member names and types (:func:`member_path` refuses
absolute names and ``..`` components) and accept only the members they asked for.

Understood formats: v7, POSIX ustar (with the prefix field), GNU (``L``/``K`` long names,
base-256 numbers) and pax (``x`` per-member records; ``g`` global records are parsed and
ignored).

:func:`tar_header` writes ustar headers, preceded by a pax record when a name, a link target or
a number does not fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

BLOCK: Final = 512
END_OF_ARCHIVE: Final = b"\0" * (2 * BLOCK)

# Member types.
REGULAR: Final = b"0"
REGULAR_OLD: Final = b"\0"
HARDLINK: Final = b"1"
SYMLINK: Final = b"2"
CHARDEV: Final = b"3"
BLOCKDEV: Final = b"4"
DIRECTORY: Final = b"5"
FIFO: Final = b"6"
CONTIGUOUS: Final = b"7"

_FILE_TYPES: Final = frozenset({REGULAR, REGULAR_OLD, CONTIGUOUS})
_NO_DATA_TYPES: Final = frozenset({HARDLINK, SYMLINK, CHARDEV, BLOCKDEV, DIRECTORY, FIFO})
_GNU_LONGNAME: Final = b"L"
_GNU_LONGLINK: Final = b"K"
_PAX: Final = b"x"
_PAX_GLOBAL: Final = b"g"
_META_TYPES: Final = frozenset({_GNU_LONGNAME, _GNU_LONGLINK, _PAX, _PAX_GLOBAL})

_MAX_NUMBER: Final = (1 << 63) - 1
_USTAR_MAGIC: Final = b"ustar\x00"
_GNU_MAGIC: Final = b"ustar  \x00"


class TarError(ValueError):
    """The stream is not a tar archive we accept. The message is safe to show."""


@dataclass(frozen=True, slots=True)
class TarMember:
    name: bytes
    type: bytes
    size: int = 0
    mode: int = 0
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    linkname: bytes = b""
    uname: bytes = b""
    gname: bytes = b""

    @property
    def is_file(self) -> bool:
        return self.type in _FILE_TYPES

    @property
    def is_dir(self) -> bool:
        return self.type == DIRECTORY

    @property
    def is_symlink(self) -> bool:
        return self.type == SYMLINK

    @property
    def is_hardlink(self) -> bool:
        return self.type == HARDLINK


class TarEnd:
    """The end-of-archive marker was read."""

    _instance: TarEnd | None = None

    def __new__(cls) -> TarEnd:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "END"


END: Final = TarEnd()

TarEvent = TarMember | bytes | TarEnd


def member_path(name: bytes) -> bytes:
    """The member name as a clean relative path, or :class:`TarError`.

    ``./`` components and trailing slashes are dropped; absolute names, ``..`` components,
    empty names and NUL bytes are refused.
    """
    if not name or b"\0" in name:
        raise TarError("tar member with an empty or invalid name")
    if name.startswith(b"/"):
        raise TarError("tar member with an absolute name")
    parts = [p for p in name.split(b"/") if p not in (b"", b".")]
    if any(p == b".." for p in parts):
        raise TarError("tar member name with '..'")
    if not parts:
        return b"."
    return b"/".join(parts)


def _parse_number(field: bytes, what: str) -> int:
    """An octal (NUL/space padded) or GNU base-256 number."""
    if not field:
        return 0
    first = field[0]
    if first & 0x80:
        if first == 0xFF:
            raise TarError(f"negative {what} in tar header")
        value = first & 0x7F
        for b in field[1:]:
            value = (value << 8) | b
            if value > _MAX_NUMBER:
                raise TarError(f"{what} too large in tar header")
        return value
    text = field.split(b"\0", 1)[0].strip(b" ")
    if not text:
        return 0
    if any(c not in b"01234567" for c in text):
        raise TarError(f"bad {what} in tar header")
    value = int(text, 8)
    if value > _MAX_NUMBER:
        raise TarError(f"{what} too large in tar header")
    return value


def _cstr(field: bytes) -> bytes:
    return field.split(b"\0", 1)[0]


def _checksum_ok(block: bytes) -> bool:
    try:
        stored = _parse_number(block[148:156], "checksum")
    except TarError:
        return False
    unsigned = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
    if stored == unsigned:
        return True
    signed = sum(b - 256 if b > 127 else b for b in block[:148]) + 8 * 0x20
    signed += sum(b - 256 if b > 127 else b for b in block[156:])
    return stored == signed


def _parse_pax(data: bytes) -> dict[bytes, bytes]:
    """Parse pax records ``LEN key=value\\n``; later keys override earlier ones."""
    out: dict[bytes, bytes] = {}
    pos = 0
    end = len(data)
    while pos < end:
        if data[pos] == 0:  # NUL padding after the last record
            if data[pos:].strip(b"\0"):
                raise TarError("bad pax record")
            break
        sp = data.find(b" ", pos, min(end, pos + 21))
        if sp < 0:
            raise TarError("bad pax record length")
        length_text = data[pos:sp]
        if not length_text.isdigit():
            raise TarError("bad pax record length")
        length = int(length_text)
        rec_end = pos + length
        if length < 5 or rec_end > end or data[rec_end - 1 : rec_end] != b"\n":
            raise TarError("bad pax record")
        record = data[sp + 1 : rec_end - 1]
        key, eq, value = record.partition(b"=")
        if not eq or not key:
            raise TarError("bad pax record")
        out[key] = value
        pos = rec_end
    return out


def _pax_int(value: bytes, what: str) -> int:
    text = value.split(b".", 1)[0]  # mtime may carry a fraction
    neg = text.startswith(b"-")
    digits = text[1:] if neg else text
    if not digits.isdigit() or len(digits) > 19:
        raise TarError(f"bad {what} in pax record")
    number = int(digits)
    if number > _MAX_NUMBER:
        raise TarError(f"{what} too large in pax record")
    return -number if neg else number


class TarReader:
    """Incremental tar parser.

    ``feed()`` bytes as they arrive, ``feed_eof()`` at the end, and call ``next_event()`` until it
    returns ``None`` (more input needed). Events are a :class:`TarMember` (a header), ``bytes``
    (the next piece of the current member's data; the pieces of one member add up to its
    ``size``) and :data:`END`. After :data:`END` the rest of the input is ignored (record
    padding). Buffering stays below one fed chunk plus ``max_meta`` bytes.
    """

    def __init__(self, *, max_meta: int = 64 * 1024) -> None:
        self._buf = bytearray()
        # Member content handed through from feed() without copying (always before _buf).
        self._direct = b""
        self._pos = 0
        self._eof = False
        self._done = False
        self._max_meta = max_meta
        # Data of the current member still to deliver, and the padding after it.
        self._data_left = 0
        self._pad_left = 0
        # A metadata member (L, K, x, g) being collected.
        self._meta_type: bytes | None = None
        self._meta_left = 0
        self._meta_buf = bytearray()
        # Overrides for the next real member.
        self._long_name: bytes | None = None
        self._long_link: bytes | None = None
        self._pax: dict[bytes, bytes] = {}
        self._zero_block_seen = False
        self.offset = 0  # bytes consumed so far (for messages)

    def feed(self, data: bytes) -> None:
        if self._eof:
            raise TarError("data after the end of the stream")
        if self._done or not data:
            return
        if self._data_left and self._pos == len(self._buf) and not self._direct:
            # Member content with nothing buffered: hand the caller's bytes through uncopied.
            n = min(self._data_left, len(data))
            self._direct = data if n == len(data) else data[:n]
            if n == len(data):
                return
            data = data[n:]
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def feed_eof(self) -> None:
        self._eof = True

    def _avail(self) -> int:
        return len(self._buf) - self._pos

    def _take(self, n: int) -> bytes:
        with memoryview(self._buf) as view:
            chunk = bytes(view[self._pos : self._pos + n])
        self._pos += n
        self.offset += n
        return chunk

    def _skip(self, n: int) -> None:
        self._pos += n
        self.offset += n

    def next_event(self) -> TarEvent | None:
        while True:
            if self._done:
                return None
            if self._direct:
                chunk, self._direct = self._direct, b""
                self._data_left -= len(chunk)
                self.offset += len(chunk)
                return chunk
            if self._data_left:
                n = min(self._data_left, self._avail())
                if n == 0:
                    self._need_more()
                    return None
                self._data_left -= n
                return self._take(n)
            if self._meta_left:
                n = min(self._meta_left, self._avail())
                if n == 0:
                    self._need_more()
                    return None
                self._meta_buf += self._take(n)
                self._meta_left -= n
                if self._meta_left == 0:
                    self._finish_meta()
                continue
            if self._pad_left:
                n = min(self._pad_left, self._avail())
                if n == 0:
                    self._need_more()
                    return None
                self._skip(n)
                self._pad_left -= n
                continue
            if self._avail() < BLOCK:
                self._need_more()
                return None
            event = self._header(self._take(BLOCK))
            if event is not None:
                return event

    def _need_more(self) -> None:
        if self._eof:
            if self._zero_block_seen and not self._data_left and not self._meta_left:
                # One zero block then the end: accept it as the end of the archive.
                self._done = True
                return None
            raise TarError("truncated tar stream")
        return None

    def _header(self, block: bytes) -> TarEvent | None:
        if block == b"\0" * BLOCK:
            if self._zero_block_seen:
                self._done = True
                return END
            self._zero_block_seen = True
            return None
        if self._zero_block_seen:
            raise TarError("tar header after an end-of-archive block")
        if not _checksum_ok(block):
            raise TarError(f"bad tar header checksum at offset {self.offset - BLOCK}")
        typeflag = block[156:157]
        size = _parse_number(block[124:136], "size")
        if typeflag in _META_TYPES:
            if size > self._max_meta:
                raise TarError("oversized tar name or pax record")
            self._meta_type = typeflag
            self._meta_left = size
            self._meta_buf = bytearray()
            self._pad_left = -size % BLOCK
            if size == 0:
                self._finish_meta()
            return None
        if typeflag == b"S":
            raise TarError("sparse tar members are not supported")
        if typeflag not in _FILE_TYPES and typeflag not in _NO_DATA_TYPES:
            raise TarError(f"unsupported tar member type {typeflag!r}")

        name = _cstr(block[0:100])
        magic = block[257:265]
        if magic[:6] == _USTAR_MAGIC and magic != _GNU_MAGIC:
            prefix = _cstr(block[345:500])
            if prefix:
                name = prefix + b"/" + name
        linkname = _cstr(block[157:257])
        member = TarMember(
            name=name,
            type=typeflag,
            size=size,
            mode=_parse_number(block[100:108], "mode") & 0o7777,
            uid=_parse_number(block[108:116], "uid"),
            gid=_parse_number(block[116:124], "gid"),
            mtime=_parse_number(block[136:148], "mtime"),
            linkname=linkname,
            uname=_cstr(block[265:297]) if magic[:5] == b"ustar" else b"",
            gname=_cstr(block[297:329]) if magic[:5] == b"ustar" else b"",
        )
        member = self._apply_overrides(member)
        if member.type in _NO_DATA_TYPES and member.size != 0:
            raise TarError("tar member that carries no data has a size")
        if not member.name or b"\0" in member.name:
            raise TarError("tar member with an empty name")
        self._data_left = member.size
        self._pad_left = -member.size % BLOCK
        return member

    def _finish_meta(self) -> None:
        kind = self._meta_type
        data = bytes(self._meta_buf)
        self._meta_type = None
        self._meta_buf = bytearray()
        if kind == _GNU_LONGNAME:
            self._long_name = _cstr(data)
        elif kind == _GNU_LONGLINK:
            self._long_link = _cstr(data)
        elif kind == _PAX:
            records = _parse_pax(data)
            for key in records:
                if key.startswith(b"GNU.sparse."):
                    raise TarError("sparse tar members are not supported")
            self._pax.update(records)
            # Consecutive 'x' headers accumulate: their sum is held to max_meta as well.
            if sum(len(k) + len(v) for k, v in self._pax.items()) > self._max_meta:
                raise TarError("oversized pax records")
        else:  # global pax records: validated, not applied
            _parse_pax(data)

    def _apply_overrides(self, m: TarMember) -> TarMember:
        name, linkname = m.name, m.linkname
        size, uid, gid, mtime = m.size, m.uid, m.gid, m.mtime
        uname, gname = m.uname, m.gname
        if self._long_name is not None:
            name = self._long_name
        if self._long_link is not None:
            linkname = self._long_link
        pax = self._pax
        if b"path" in pax:
            name = pax[b"path"]
        if b"linkpath" in pax:
            linkname = pax[b"linkpath"]
        if b"size" in pax:
            size = _pax_int(pax[b"size"], "size")
            if size < 0:
                raise TarError("negative size in pax record")
        if b"uid" in pax:
            uid = _pax_int(pax[b"uid"], "uid")
        if b"gid" in pax:
            gid = _pax_int(pax[b"gid"], "gid")
        if b"mtime" in pax:
            mtime = _pax_int(pax[b"mtime"], "mtime")
        if b"uname" in pax:
            uname = pax[b"uname"]
        if b"gname" in pax:
            gname = pax[b"gname"]
        self._long_name = None
        self._long_link = None
        self._pax = {}
        return TarMember(
            name=name,
            type=m.type,
            size=size,
            mode=m.mode,
            uid=uid,
            gid=gid,
            mtime=mtime,
            linkname=linkname,
            uname=uname,
            gname=gname,
        )


# Writing ----------------------------------------------------------------------------------------


def _octal(value: int, width: int) -> bytes | None:
    """``width`` bytes: octal digits and a NUL, or None when the value does not fit."""
    if value < 0:
        return None
    text = b"%o" % value
    if len(text) > width - 1:
        return None
    return text.rjust(width - 1, b"0") + b"\0"


def _pax_record(key: bytes, value: bytes) -> bytes:
    body = b" " + key + b"=" + value + b"\n"
    length = len(body) + 1
    while len(b"%d" % length) + len(body) != length:
        length = len(b"%d" % length) + len(body)
    return b"%d" % length + body


def _split_ustar_name(name: bytes) -> tuple[bytes, bytes] | None:
    """(prefix, name) for the ustar fields, or None when it does not fit."""
    if len(name) <= 100:
        return b"", name
    # Split at a slash so that prefix <= 155 and name <= 100.
    for i in range(len(name) - 1, 0, -1):
        if name[i : i + 1] == b"/" and i <= 155 and len(name) - i - 1 <= 100 and i < len(name) - 1:
            return name[:i], name[i + 1 :]
    return None


def _raw_header(
    name: bytes,
    prefix: bytes,
    typeflag: bytes,
    size: int,
    mode: int,
    uid: int,
    gid: int,
    mtime: int,
    linkname: bytes,
    uname: bytes,
    gname: bytes,
) -> bytes:
    def num(value: int, width: int) -> bytes:
        out = _octal(value, width)
        return out if out is not None else b"0" * (width - 1) + b"\0"

    block = bytearray(BLOCK)
    block[0 : len(name)] = name
    block[100:108] = num(mode & 0o7777, 8)
    block[108:116] = num(uid, 8)
    block[116:124] = num(gid, 8)
    block[124:136] = num(size, 12)
    block[136:148] = num(mtime, 12)
    block[148:156] = b" " * 8
    block[156:157] = typeflag
    block[157 : 157 + len(linkname)] = linkname
    block[257:265] = b"ustar\x0000"
    block[265 : 265 + len(uname)] = uname
    block[297 : 297 + len(gname)] = gname
    block[345 : 345 + len(prefix)] = prefix
    checksum = sum(block)
    block[148:156] = b"%06o\0 " % checksum
    return bytes(block)


def tar_header(
    name: bytes,
    *,
    type: bytes = REGULAR,
    size: int = 0,
    mode: int = 0o644,
    uid: int = 0,
    gid: int = 0,
    mtime: int = 0,
    linkname: bytes = b"",
    uname: bytes = b"",
    gname: bytes = b"",
) -> bytes:
    """The header block(s) of one member; a pax record first when something does not fit."""
    if not name or b"\0" in name or b"\0" in linkname:
        raise ValueError("tar names must be non-empty and free of NUL bytes")
    if size < 0 or (type in _NO_DATA_TYPES and size):
        raise ValueError("bad member size")
    pax: list[bytes] = []
    split = _split_ustar_name(name)
    if split is None:
        pax.append(_pax_record(b"path", name))
        prefix, short = b"", name[-100:].lstrip(b"/") or b"x"
    else:
        prefix, short = split
    if len(linkname) > 100:
        pax.append(_pax_record(b"linkpath", linkname))
        linkname = b""
    if _octal(size, 12) is None:
        pax.append(_pax_record(b"size", b"%d" % size))
    if _octal(uid, 8) is None:
        pax.append(_pax_record(b"uid", b"%d" % uid))
    if _octal(gid, 8) is None:
        pax.append(_pax_record(b"gid", b"%d" % gid))
    if _octal(mtime, 12) is None:
        pax.append(_pax_record(b"mtime", b"%d" % mtime))
    if len(uname) > 32:
        uname = b""
    if len(gname) > 32:
        gname = b""
    out = b""
    if pax:
        body = b"".join(pax)
        out = (
            _raw_header(b"PaxHeader", b"", _PAX, len(body), 0o644, 0, 0, 0, b"", b"", b"")
            + body
            + b"\0" * (-len(body) % BLOCK)
        )
    return out + _raw_header(
        short,
        prefix,
        type,
        size if _octal(size, 12) is not None else 0,
        mode,
        uid if _octal(uid, 8) is not None else 0,
        gid if _octal(gid, 8) is not None else 0,
        mtime if _octal(mtime, 12) is not None else 0,
        linkname,
        uname,
        gname,
    )


def padding(size: int) -> bytes:
    """The zero bytes that follow ``size`` bytes of member data."""
    return b"\0" * (-size % BLOCK)
