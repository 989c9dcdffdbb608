"""atheris harness: the codecs of the container's file helper (gateway.containerfs.shell).

The first input byte picks the parser; the rest is what a hostile container could print:

* 0: ``parse_stat`` (one stat line)      * 1: ``parse_listing`` (a directory listing)
* 2: ``parse_id_map`` (/etc/passwd text)  * 3: ``find_reply`` (reply framing, any split point)
* 4: ``classify`` (a tool's error text)

Only the documented exceptions may escape (ParseError, ValueError from find_reply); results
must keep their invariants (names without "/", ids in range, framing offsets inside the buffer).
"""

from __future__ import annotations

import errno

import atheris

from _common import bare_package, run

bare_package("gateway")
bare_package("gateway.containerfs")
with atheris.instrument_imports(include=["gateway"]):
    from gateway.containerfs import shell

MARK = b"\n@@sshgw-0123456789abcdef@@ "
KNOWN_ERRNOS = frozenset(errno.errorcode)


def test_one_input(data: bytes) -> None:
    if not data:
        return
    mode, body = data[0] % 5, data[1:]
    if mode == 0:
        try:
            shell.parse_stat(body)
        except shell.ParseError:
            pass
    elif mode == 1:
        try:
            entries = shell.parse_listing(body)
        except shell.ParseError:
            return
        for name, _st in entries[2:]:
            assert name and b"/" not in name, name
    elif mode == 2:
        for uid, name in shell.parse_id_map(body).items():
            assert 0 <= uid < 10**10 and name.isprintable() and " " not in name
    elif mode == 3:
        split = body[0] if body else 0
        whole = body[1:]
        try:
            found = shell.find_reply(whole, MARK)
        except ValueError:
            return
        if found is not None:
            end, status, used = found
            assert 0 <= end < used <= len(whole) and 0 <= status < 1000
            # The same answer whatever prefix had arrived before (a reader rescans from 0).
            part = whole[: min(split, len(whole))]
            try:
                early = shell.find_reply(part, MARK)
            except ValueError:
                return
            assert early is None or early == found
    else:
        assert shell.classify(body) in KNOWN_ERRNOS


def seeds() -> list[bytes]:
    stat = b"f 644 1000 1000 5 1700000000 1700000000 1 2 ./name"
    return [
        b"\x00" + stat,
        b"\x01" + stat.replace(b"./name", b".") + b"\n" + stat + b"\nwith\nnewline\n",
        b"\x02root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
        b"\x03\x05body" + MARK + b"0\n",
        b"\x04mkdir: can't create directory 'x': Permission denied\n",
    ]


if __name__ == "__main__":
    run(test_one_input, seeds())
