"""Untrusted text made safe to show on a terminal: :func:`literal`.

Users choose the commands they run, the paths they touch and the comments of their keys; a
container's owner chooses its name, image and labels. Such text reaches administrators' terminals
through `sshgw` tables and the gateway's log lines, and users' terminals through the container
listing. Shown raw, an ESC or a C1 control would drive the terminal (change its title, move the
cursor, hide lines) and a bidi override would reorder what follows it. :func:`literal` renders
every such character visibly, the way Python writes it in a string literal (``\\x1b``, ``\\u202e``).

Rich markup is a separate matter: the CLI hands table cells to rich as ``Text`` objects, which rich
never parses for markup (see ``gateway.cli.common``). Pure and stdlib only.
"""

from __future__ import annotations

import re
import unicodedata

# Control (Cc: C0, DEL, C1), format (Cf: bidi controls and overrides, zero-width characters, soft
# hyphen, tags), surrogates (Cs: undecodable bytes kept by surrogateescape), line and paragraph
# separators (Zl, Zp). Spaces (Zs), private-use (Co) and unassigned (Cn) characters are shown.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}

# Candidates for :func:`json_terminal_safe`: JSON (``ensure_ascii=False``) already escapes C0.
_NON_ASCII = re.compile("[^\x00-\x7e]")


def _unsafe(ch: str) -> bool:
    return not ch.isprintable() and unicodedata.category(ch) in _ESCAPED_CATEGORIES


def _escape(ch: str) -> str:
    named = _NAMED.get(ch)
    if named is not None:
        return named
    cp = ord(ch)
    if cp <= 0xFF:
        return f"\\x{cp:02x}"
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def literal(value: object) -> str:
    """``value`` as text that shows every character it holds and controls nothing.

    Printable text comes back unchanged (backslashes included); control, format and separator
    characters come back escaped: ``\\t``, ``\\n``, ``\\r``, ``\\x1b``, ``\\x9b``, ``\\u202e``.
    """
    text = value if isinstance(value, str) else str(value)
    if text.isprintable():
        return text
    return "".join(_escape(ch) if _unsafe(ch) else ch for ch in text)


def json_terminal_safe(doc: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with DEL, C1, format (bidi),
    separator and lone surrogate characters written as ``\\uXXXX`` escapes: the same JSON value,
    harmless on a terminal. Other non-ASCII text stays as it is.

    Those characters can only occur inside JSON strings, where the escape means the same thing.
    """
    if doc.isascii() and "\x7f" not in doc:
        return doc
    return _NON_ASCII.sub(_json_escape, doc)


def _json_escape(m: re.Match[str]) -> str:
    ch = m.group()
    if not _unsafe(ch):
        return ch
    cp = ord(ch)
    if cp <= 0xFFFF:
        return f"\\u{cp:04x}"
    cp -= 0x10000  # a UTF-16 surrogate pair, as JSON spells characters outside the BMP
    return f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}"
