"""argon2id password hashing."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.errors import InvalidInput
from gateway.store import passwords
from gateway.store.passwords import hash_password, needs_rehash, verify_password


def test_hash_is_argon2id_and_salted() -> None:
    h1 = hash_password("correct horse")
    h2 = hash_password("correct horse")
    assert h1.startswith("$argon2id$")
    assert h1 != h2
    assert "correct horse" not in h1


def test_verify_accepts_only_the_right_password() -> None:
    h = hash_password("s3cret")
    assert verify_password(h, "s3cret")
    assert not verify_password(h, "s3cret ")
    assert not verify_password(h, "S3cret")
    assert not verify_password(h, "")


def test_unicode_passwords() -> None:
    h = hash_password("pässwörd-🔑")
    assert verify_password(h, "pässwörd-🔑")
    assert not verify_password(h, "passwort-🔑")


@pytest.mark.parametrize("stored", [None, "", "not a hash", "$argon2id$v=19$broken"])
def test_no_or_broken_hash_never_verifies(stored: str | None) -> None:
    assert not verify_password(stored, "anything")
    assert not verify_password(stored, "")


def test_unknown_user_costs_one_verify(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no hash, a real verify runs against a dummy hash (so it is not faster)."""
    calls: list[str] = []
    real = passwords._hasher

    class Spy:
        def hash(self, password: str) -> str:
            return real.hash(password)

        def verify(self, hash_: Any, password: Any) -> Any:
            calls.append(str(hash_))
            return real.verify(hash_, password)

    monkeypatch.setattr(passwords, "_hasher", Spy())
    assert not verify_password(None, "guess")
    assert len(calls) == 1 and calls[0].startswith("$argon2id$")
    # Even the dummy's own password does not log anyone in.
    assert not verify_password(None, "sshgw: a password nobody has")


def test_empty_and_oversized_passwords_are_refused() -> None:
    with pytest.raises(InvalidInput):
        hash_password("")
    with pytest.raises(InvalidInput):
        hash_password("x" * (passwords.MAX_PASSWORD_BYTES + 1))
    h = hash_password("x" * passwords.MAX_PASSWORD_BYTES)
    assert verify_password(h, "x" * passwords.MAX_PASSWORD_BYTES)
    assert not verify_password(h, "x" * (passwords.MAX_PASSWORD_BYTES + 1))


def test_needs_rehash() -> None:
    assert not needs_rehash(hash_password("pw"))
    assert needs_rehash("$argon2id$v=19$m=1024,t=1,p=1$c29tZXNhbHQ$aGFzaGhhc2hoYXNo")
    assert needs_rehash("garbage")
