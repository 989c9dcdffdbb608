"""SSH public keys as people paste them: validated, normalized and fingerprinted."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import InvalidInput

_PRIVATE_MARKERS = ("PRIVATE KEY", "PuTTY-User-Key-File", "SSH PRIVATE KEY FILE FORMAT")


@dataclass(frozen=True, slots=True)
class ParsedKey:
    algorithm: str
    # SHA256:<base64>, exactly as ``ssh-keygen -lf`` prints it.
    fingerprint: str
    # One authorized_keys line without options: "ALGORITHM BASE64[ COMMENT]".
    public_key: str
    comment: str | None


def _looks_private(text: str) -> bool:
    import asyncssh

    if any(marker in text for marker in _PRIVATE_MARKERS):
        return True
    try:
        asyncssh.import_private_key(text)
    except (asyncssh.KeyImportError, ValueError, TypeError):
        return False
    except Exception:  # a passphrase-protected key still is a private key
        return True
    return True


def parse_public_key(text: str, comment: str | None = None) -> ParsedKey:
    """Validate one SSH public key (OpenSSH one-line or RFC 4716 format).

    ``comment`` replaces the key's own comment when given. Raises :class:`InvalidInput` for
    private keys, certificates, several keys at once, authorized_keys options and garbage.
    """
    text = text.strip()
    if not text:
        raise InvalidInput("empty public key")
    if _looks_private(text):
        raise InvalidInput(
            "that is a PRIVATE key: never hand it out; give the public key (the .pub file)"
        )
    if not text.startswith("---- BEGIN SSH2 PUBLIC KEY ----"):
        lines = [ln.strip() for ln in text.splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("#")]
        if len(lines) != 1:
            if all(ln.startswith(("ssh-", "ecdsa-", "sk-")) for ln in lines):
                raise InvalidInput(f"found {len(lines)} keys; add one key at a time")
            raise InvalidInput(
                "not a valid SSH public key (expected one line 'TYPE BASE64 [COMMENT]')"
            )
        text = lines[0]
        first = text.split(None, 1)[0]
        if first.endswith("-cert-v01@openssh.com"):
            raise InvalidInput("SSH certificates are not supported; give the plain public key")
        if "=" in first or "," in first:
            raise InvalidInput(
                "authorized_keys options are not supported; give only 'TYPE BASE64 [COMMENT]'"
            )
    import asyncssh  # imported when needed: keeps the CLI quick

    try:
        key = asyncssh.import_public_key(text)
    except (asyncssh.KeyImportError, ValueError, TypeError) as exc:
        raise InvalidInput(f"not a valid SSH public key ({exc})") from None
    algorithm = key.get_algorithm()
    own_comment = key.get_comment()
    chosen = (comment if comment is not None else own_comment) or None
    if chosen is not None:
        chosen = " ".join(chosen.split())  # one line, no control whitespace
        if not chosen.isprintable():
            raise InvalidInput("key comment must be printable text")
        chosen = chosen or None
    key.set_comment(None)
    body = key.export_public_key("openssh").decode("ascii").strip()
    line = f"{body} {chosen}" if chosen else body
    return ParsedKey(
        algorithm=algorithm,
        fingerprint=key.get_fingerprint("sha256"),
        public_key=line,
        comment=chosen,
    )
