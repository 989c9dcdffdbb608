"""Settings from ``SSHGW_*`` environment variables and an optional TOML file.

Precedence (highest first): command-line flags, environment, TOML file (``--config`` or
``SSHGW_CONFIG``), defaults.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from gateway.errors import InvalidInput
from gateway.ssh.limits import parse_max_startups
from gateway.ssh.proxyproto import Network, parse_networks


def _default_data_dir() -> Path:
    xdg = os.environ.get("XDG_DATA_HOME")
    base = Path(xdg) if xdg else Path.home() / ".local" / "share"
    return base / "sshgw"


def split_hostport(text: str, default_port: int) -> tuple[str, int]:
    """``HOST:PORT``, ``[v6]:PORT``, ``:PORT`` or ``HOST`` into (host, port)."""
    text = text.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_s = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, _, port_s = text.partition(":")
    else:
        host, port_s = text, ""
    try:
        port = int(port_s) if port_s else default_port
    except ValueError:
        raise InvalidInput(f"bad port in listen address {text!r}") from None
    if not 0 <= port <= 65535:
        raise InvalidInput(f"port out of range in listen address {text!r}")
    return host or "0.0.0.0", port


_REPLICA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _startups_text(v: Any) -> str:
    """``max_startups`` as given, once it parses (see :func:`parse_max_startups`)."""
    text = str(v).strip()
    parse_max_startups(text)
    return text


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SSHGW_", extra="ignore", toml_file=None)

    # Where the gateway listens for SSH.
    listen: str = "0.0.0.0:2222"
    # PROXY protocol v1/v2 on the SSH listener (behind a TCP balancer): a header is required
    # from the addresses and CIDRs in proxy_from, and accepted from no one else.
    proxy_protocol: bool = False
    proxy_from: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["127.0.0.1", "::1"])
    # Host keys, the default SQLite database and session recordings live here.
    data_dir: Path = Field(default_factory=_default_data_dir)
    # The SSH host keys; default: the data directory. Replicas that share it show the same keys.
    host_key_dir: Path | None = None
    # SQLAlchemy URL; default: sqlite+aiosqlite:///<data_dir>/sshgw.db
    database_url: str | None = None
    # Docker endpoint; default: DOCKER_HOST, else the local socket.
    docker_host: str | None = None
    docker_tls_verify: bool | None = None
    docker_cert_path: Path | None = None
    # Engines added with ``sshgw engine add`` are read from the database this often (seconds).
    engine_poll_interval: float = Field(default=5.0, ge=0.5)
    # Containers the gateway keeps in memory per engine (its directory); more are looked up.
    engine_max_containers: int = Field(default=5000, ge=1)
    # Client environment variable names passed into sessions (shell globs allowed).
    accept_env: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["TERM", "LANG", "LC_*"]
    )
    # Message of the day shown on interactive shells: text, or a file.
    motd: str | None = None
    motd_file: Path | None = None
    # Password and keyboard-interactive authentication.
    password_auth: bool = True
    # Seconds allowed for authentication before the connection is dropped.
    login_timeout: float = 60.0
    # Seconds between keepalive probes (0 disables).
    keepalive_interval: float = 30.0
    # Grace period between TERM and KILL when a client goes away from a running command.
    kill_grace: float = 2.0
    # Metrics, health and admin HTTP listener.
    metrics_listen: str = "127.0.0.1:9122"
    # The web listener (admin API under /api/v1, web terminal): off unless set, e.g.
    # "127.0.0.1:8022". TLS with both http_tls_cert and http_tls_key (PEM files); behind a
    # reverse proxy, X-Forwarded-For/-Proto are believed only from http_proxy_from.
    http_listen: str | None = None
    http_tls_cert: Path | None = None
    http_tls_key: Path | None = None
    http_proxy_from: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Add the container name as a metric label (for small installations only).
    metrics_container_label: bool = False
    # Structured logs: "plain" or "json"; level name.
    log_format: str = "plain"
    log_level: str = "INFO"
    # Session recordings (asciicast v2) for PTY sessions.
    recording: bool = True
    record_input: bool = False
    recordings_dir: Path | None = None
    # Audit trail and session rows in the database (off: no audit events, no `sshgw sessions`,
    # no `sessions kill`; metrics stay on).
    audit: bool = True
    # Several replicas behind one balancer (README, "Running several replicas"). SIGTERM
    # drains: not ready, no new connections, live sessions told and given this many seconds
    # before they are ended (0: at once).
    drain_timeout: float = 30.0
    # This process's name among the replicas (each session row names it); default
    # HOST-PID-RANDOM, new for every process.
    replica_name: str | None = None
    # Seconds between heartbeats; the live sessions of a replica silent for 3 of them are
    # marked ended (gateway_lost) by the others.
    heartbeat_interval: float = 10.0

    # Limits (see docs/SECURITY.md). Each bounds what one client or one source can make the
    # gateway hold or do.
    # Channels (sessions, sftp, scp) open at once on one connection (OpenSSH: MaxSessions 10).
    max_sessions: int = 64
    # Unauthenticated connections: OpenSSH's MaxStartups "start:rate:full" (refuse rate% above
    # start, all above full), and at most this many from one source address.
    max_startups: str = "100:30:300"
    max_startups_per_source: int = 32
    # Authentication attempts per connection (OpenSSH: MaxAuthTries 6).
    max_auth_tries: int = 6
    # Password verifications (argon2, 64 MiB each) running at once.
    max_password_checks: int = 4
    # Open SFTP handles (files and directory listings) per session.
    max_sftp_handles: int = 128
    # Environment variables taken from a client per session.
    max_env: int = 64
    # Bytes the gateway may queue towards one slow client before it stops reading its sources.
    write_buffer_high: int = 1 << 20
    # Session recordings: bytes per recording, then a "recording truncated" marker; a recording
    # stops (with a marker) when the recordings' file system has less free space than this.
    recording_max_bytes: int = 256 << 20
    recording_min_free: int = 256 << 20
    # The version string sent to SSH clients (no version number by default).
    server_version: str = "sshgw"
    # ProxyJump (`ssh -J alice@gw root@web1`): a direct-tcpip channel to CONTAINER on this port
    # is an SSH connection the gateway serves itself, into that container; 0 turns it off.
    jump_port: int = 22
    # ssh -L / -D into a container that uses the gateway host's network: refused by default
    # (its localhost is the gateway host's); when allowed, only through a relay in the container.
    forward_host_network: bool = False
    # The web terminal (`ssh alice@gw web web1` prints a one-time link): the address browsers
    # reach the web listener at, "https://gw.example.com" (scheme, host and port only); its
    # WebSocket accepts only this origin. Unset: no links.
    http_public_url: str | None = None

    @field_validator("http_public_url")
    @classmethod
    def _check_http_public_url(cls, v: str | None) -> str | None:
        if v is None or not v.strip():
            return None
        url = urlsplit(v.strip())
        try:
            url.port  # noqa: B018 (raises for a port that is not a number in range)
        except ValueError:
            raise InvalidInput(f"http_public_url {v!r} has a bad port") from None
        if url.scheme not in ("http", "https") or not url.hostname or url.path not in ("", "/"):
            raise InvalidInput(f"http_public_url {v!r} is not http(s)://HOST[:PORT]")
        if url.query or url.fragment or url.username or url.password:
            raise InvalidInput(f"http_public_url {v!r} is not http(s)://HOST[:PORT]")
        host = url.hostname if ":" not in url.hostname else f"[{url.hostname}]"
        default = {"http": 80, "https": 443}[url.scheme]
        port = f":{url.port}" if url.port not in (None, default) else ""
        return f"{url.scheme}://{host}{port}"  # as a browser's Origin header says it

    @field_validator("accept_env", mode="before")
    @classmethod
    def _split_env_list(cls, v: Any) -> Any:
        if isinstance(v, str):
            return [p.strip() for p in v.replace(",", " ").split() if p.strip()]
        return v

    @field_validator("proxy_from", mode="before")
    @classmethod
    def _check_proxy_from(cls, v: Any, info: ValidationInfo) -> Any:
        items = [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v
        if isinstance(items, list):
            parse_networks([str(i) for i in items])  # one clear line when one is bad
            if not items and info.data.get("proxy_protocol"):
                raise InvalidInput("proxy_protocol is on but proxy_from names no address")
        return items

    @field_validator("http_proxy_from", mode="before")
    @classmethod
    def _check_http_proxy_from(cls, v: Any) -> Any:
        items = [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v
        if isinstance(items, list):
            try:
                parse_networks([str(i) for i in items])
            except InvalidInput as exc:
                raise InvalidInput("http_" + exc.user_message) from None
        return items

    @model_validator(mode="after")
    def _check_http_tls(self) -> Settings:
        if (self.http_tls_cert is None) != (self.http_tls_key is None):
            raise InvalidInput("http_tls_cert and http_tls_key go together: give both or neither")
        return self

    @field_validator("max_startups", mode="before")
    @classmethod
    def _check_max_startups(cls, v: Any) -> Any:
        # One clear line (InvalidInput passes through pydantic unchanged).
        return _startups_text(v)

    @field_validator(
        "max_sessions",
        "max_startups_per_source",
        "max_auth_tries",
        "max_password_checks",
        mode="after",
    )
    @classmethod
    def _at_least_one(cls, v: int, info: ValidationInfo) -> int:
        if v < 1:
            raise InvalidInput(f"{info.field_name} must be at least 1, not {v}")
        return v

    @field_validator("server_version", mode="after")
    @classmethod
    def _check_server_version(cls, v: str) -> str:
        # What follows "SSH-2.0-" in the banner: printable ASCII without spaces or "-"
        # (RFC 4253 4.2).
        if not v or len(v) > 200 or any(not 0x21 <= ord(ch) <= 0x7E or ch == "-" for ch in v):
            raise InvalidInput(
                "server_version must be 1-200 printable ASCII characters without spaces "
                f"or '-': {v!r}"
            )
        return v

    @field_validator("drain_timeout", mode="after")
    @classmethod
    def _check_drain_timeout(cls, v: float) -> float:
        if not 0 <= v <= 86400:
            raise InvalidInput(f"drain_timeout must be 0-86400 seconds, not {v:g}")
        return v

    @field_validator("heartbeat_interval", mode="after")
    @classmethod
    def _check_heartbeat_interval(cls, v: float) -> float:
        # 3 silent intervals and one more for the others' tick: lost sessions within 60 s.
        if not 0.1 <= v <= 15:
            raise InvalidInput(f"heartbeat_interval must be 0.1-15 seconds, not {v:g}")
        return v

    @field_validator("replica_name", mode="after")
    @classmethod
    def _check_replica_name(cls, v: str | None) -> str | None:
        if v is not None and not _REPLICA_NAME.fullmatch(v):
            raise InvalidInput(
                f"replica_name {v!r}: 1-64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return v

    @field_validator("jump_port", mode="after")
    @classmethod
    def _check_jump_port(cls, v: int) -> int:
        if not 0 <= v <= 65535:
            raise InvalidInput(f"jump_port must be a TCP port (1-65535) or 0 (off), not {v}")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        # The file given to load_settings (bound to the class it made), else SSHGW_CONFIG.
        toml_path = settings_cls.model_config.get("toml_file") or os.environ.get("SSHGW_CONFIG")
        if isinstance(toml_path, str | Path):
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(toml_path)))
        return tuple(sources)

    # Derived values ------------------------------------------------------------------------

    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'sshgw.db'}"

    @property
    def effective_host_key_dir(self) -> Path:
        return self.host_key_dir or self.data_dir

    @property
    def proxy_networks(self) -> tuple[Network, ...]:
        """Who may (and must) send a PROXY protocol header, when proxy_protocol is on."""
        return parse_networks(self.proxy_from)

    @property
    def effective_recordings_dir(self) -> Path:
        return self.recordings_dir or self.data_dir / "recordings"

    @property
    def listen_address(self) -> tuple[str, int]:
        return split_hostport(self.listen, 2222)

    @property
    def http_address(self) -> tuple[str, int] | None:
        """The web listener's address, or None when it is off."""
        if not self.http_listen or not self.http_listen.strip():
            return None
        return split_hostport(self.http_listen, 8022)

    @property
    def http_proxy_networks(self) -> tuple[Network, ...]:
        """Reverse proxies whose X-Forwarded-For/-Proto the web listener believes."""
        return parse_networks(self.http_proxy_from)

    @property
    def metrics_address(self) -> tuple[str, int]:
        return split_hostport(self.metrics_listen, 9122)

    def motd_text(self) -> str | None:
        if self.motd_file is not None:
            try:
                return self.motd_file.read_text(errors="replace")
            except OSError:
                return None
        return self.motd


def _with_file(path: Path) -> type[Settings]:
    """:class:`Settings` that read ``path`` (instead of ``SSHGW_CONFIG``) below the environment."""

    class FileSettings(Settings):
        model_config = SettingsConfigDict(toml_file=path)

    FileSettings.__name__ = FileSettings.__qualname__ = "Settings"
    return FileSettings


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Load settings; ``overrides`` (from flags) win over everything else."""
    cls = Settings
    if config_file is not None:
        path = Path(config_file)
        if not path.is_file():
            raise InvalidInput(f"config file not found: {path}")
        cls = _with_file(path)
    elif os.environ.get("SSHGW_CONFIG") and not Path(os.environ["SSHGW_CONFIG"]).is_file():
        raise InvalidInput(f"config file not found: {os.environ['SSHGW_CONFIG']}")
    clean = {k: v for k, v in overrides.items() if v is not None}
    try:
        return cls(**clean)
    except Exception as exc:  # pydantic ValidationError: show it as one clear error
        raise InvalidInput(f"invalid configuration: {exc}") from None
