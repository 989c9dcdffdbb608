"""The TOML config file: read for the load that names it, below the environment and flags, and
never remembered by later loads (no module state)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import Settings, load_settings
from gateway.errors import InvalidInput


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    path = tmp_path / "sshgw.toml"
    path.write_text('listen = "127.0.0.1:2200"\nlog_level = "DEBUG"\n')
    return path


def test_the_file_is_read_for_its_load_only(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSHGW_CONFIG", raising=False)
    monkeypatch.delenv("SSHGW_LISTEN", raising=False)
    monkeypatch.delenv("SSHGW_LOG_LEVEL", raising=False)
    loaded = load_settings(toml)
    assert isinstance(loaded, Settings)
    assert (loaded.listen, loaded.log_level) == ("127.0.0.1:2200", "DEBUG")
    assert load_settings().listen == "0.0.0.0:2222"
    assert Settings().listen == "0.0.0.0:2222"


def test_environment_and_flags_win_over_the_file(
    toml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSHGW_CONFIG", raising=False)
    monkeypatch.setenv("SSHGW_LOG_LEVEL", "WARNING")
    loaded = load_settings(toml, listen="127.0.0.1:2300")
    assert (loaded.listen, loaded.log_level) == ("127.0.0.1:2300", "WARNING")


def test_sshgw_config_is_read_when_no_file_is_given(
    toml: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other.toml"
    other.write_text('listen = "127.0.0.1:2400"\n')
    monkeypatch.delenv("SSHGW_LISTEN", raising=False)
    monkeypatch.setenv("SSHGW_CONFIG", str(other))
    assert load_settings().listen == "127.0.0.1:2400"
    assert load_settings(toml).listen == "127.0.0.1:2200"
    assert load_settings().listen == "127.0.0.1:2400"


def test_a_missing_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(InvalidInput, match="config file not found"):
        load_settings(tmp_path / "missing.toml")
    monkeypatch.setenv("SSHGW_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(InvalidInput, match="config file not found"):
        load_settings()
