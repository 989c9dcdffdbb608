"""Metric definitions. One registry per :class:`Metrics` so several gateways (tests) can live in
one process. Labels stay low-cardinality: no user names, addresses or container names, except the
optional ``container`` label on session metrics (``metrics_container_label``) for small installations.
"""

from __future__ import annotations

import platform
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

import gateway
from gateway.vocab import SessionKind

# Buckets in seconds.
_SESSION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 12 * 3600.0)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_SFTP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0)


# Why a connection from a trusted balancer was closed before SSH (gateway.ssh.proxied).
PROXY_HEADER_REASONS = ("missing", "closed", "invalid", "too_long")


def label_or_other(value: str, allowed: frozenset[str], other: str = "other") -> str:
    """``value`` as a label value when it is one of ``allowed``, else ``other``."""
    return value if value in allowed else other


def short_label(value: str, limit: int = 32) -> str:
    """A free-form label value cut to ``limit`` characters (``unknown`` when empty)."""
    return value[:limit] if value else "unknown"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def build_versions() -> dict[str, str]:
    return {
        "version": gateway.__version__,
        "python": platform.python_version(),
        "asyncssh": _version("asyncssh"),
        "aiodocker": _version("aiodocker"),
    }


class Metrics:
    """All gateway metrics, registered in ``self.registry``."""

    def __init__(self, container_label: bool = False) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.container_label = container_label
        r = self.registry
        kind = ("kind", "container") if container_label else ("kind",)

        self.build_info = Gauge(
            "sshgw_build_info",
            "Build information; the value is always 1.",
            list(build_versions()),
            registry=r,
        )
        self.build_info.labels(**build_versions()).set(1)

        # Readiness, as seen at the last /metrics or /readyz request.
        self.ready = Gauge(
            "sshgw_ready",
            "1 when the database and the Docker engine both answered at the last check.",
            registry=r,
        )
        self.dependency_up = Gauge(
            "sshgw_dependency_up",
            "1 when the dependency (database, docker) answered at the last check.",
            ["dependency"],
            registry=r,
        )

        # Connections and authentication.
        self.connections_opened = Counter(
            "sshgw_connections_opened", "TCP connections accepted.", registry=r
        )
        self.connections_open = Gauge(
            "sshgw_connections_open", "TCP connections currently open.", registry=r
        )
        self.handshake_failures = Counter(
            "sshgw_handshake_failures",
            "Connections that ended before authentication completed (SSH handshake failed).",
            registry=r,
        )
        self.auth_attempts = Counter(
            "sshgw_auth_attempts",
            "Authentication attempts by method (publickey, password, keyboard-interactive) and "
            "result (success, failure).",
            ["method", "result"],
            registry=r,
        )
        # Peers that have not authenticated yet (docs/SECURITY.md, "Unauthenticated peers").
        self.startups_refused = Counter(
            "sshgw_startups_refused",
            "Connections closed before the key exchange because too many were unauthenticated, "
            "by reason (startups: max_startups; per_source: max_startups_per_source).",
            ["reason"],
            registry=r,
        )
        self.proxy_header_refused = Counter(
            "sshgw_proxy_header_refused",
            "Connections from a proxy_from address closed without a good PROXY protocol header, "
            "by reason (missing: none within login_timeout; closed: the peer closed first; "
            "invalid; too_long).",
            ["reason"],
            registry=r,
        )
        self.unauthenticated = Gauge(
            "sshgw_unauthenticated_connections",
            "Connections open that have not authenticated yet (counted against max_startups).",
            registry=r,
        )
        self.auth_throttled = Counter(
            "sshgw_auth_throttled",
            "Password checks delayed after earlier failures from the same source or for the "
            "same user.",
            registry=r,
        )
        self.auth_too_many = Counter(
            "sshgw_auth_too_many_failures",
            "Connections disconnected after max_auth_tries failed authentication attempts.",
            registry=r,
        )
        self.password_checks_waiting = Gauge(
            "sshgw_password_checks_waiting",
            "Password checks waiting for one of the max_password_checks slots.",
            registry=r,
        )
        self.channels_refused = Counter(
            "sshgw_channels_refused",
            "Session channels refused at open, by reason (max_sessions: too many open at once "
            "on one connection).",
            ["reason"],
            registry=r,
        )
        self.access_denied = Counter(
            "sshgw_access_denied",
            "Requests refused by policy, by reason (no_grant, right_missing, login_not_allowed, "
            "path_rule, expired).",
            ["reason"],
            registry=r,
        )

        # Sessions.
        self.sessions_started = Counter(
            "sshgw_sessions_started",
            "Sessions requested, by kind and result (ok: started; denied: refused by policy).",
            [*kind, "result"],
            registry=r,
        )
        self.sessions_ended = Counter(
            "sshgw_sessions_ended",
            "Sessions ended, by kind and result (exit, client_gone, container_gone, killed, error).",
            [*kind, "result"],
            registry=r,
        )
        self.sessions_active = Gauge(
            "sshgw_sessions_active", "Sessions currently open, by kind.", list(kind), registry=r
        )
        self.session_duration = Histogram(
            "sshgw_session_duration_seconds",
            "Session duration, by kind.",
            list(kind),
            buckets=_SESSION_BUCKETS,
            registry=r,
        )
        self.first_byte = Histogram(
            "sshgw_first_byte_seconds",
            "Time from TCP accept to the first byte of the container's output, by kind.",
            list(kind),
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.bytes_to_container = Counter(
            "sshgw_bytes_to_container",
            "Bytes sent into containers (client input), by session kind.",
            list(kind),
            registry=r,
        )
        self.bytes_from_container = Counter(
            "sshgw_bytes_from_container",
            "Bytes read from containers (output), by session kind.",
            list(kind),
            registry=r,
        )

        # Port forwarding (ssh -L / -D): active forwards are sessions_active{kind="forward"},
        # their bytes sshgw_bytes_{to,from}_container{kind="forward"}.
        self.forward_opens = Counter(
            "sshgw_forward_opens",
            "Forwarded connections asked for, by result (ok, denied: by grant or destination, "
            "unreachable: nothing answers or no relay tool, refused: no container or too many "
            "channels, error) and how the port was reached (direct, relay, none).",
            ["result", "via"],
            registry=r,
        )

        # Docker engine.
        self.exec_start = Histogram(
            "sshgw_docker_exec_start_seconds",
            "Latency of starting a process in a container (exec create + start + attach).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.docker_errors = Counter(
            "sshgw_docker_errors",
            "Docker Engine API errors, by operation.",
            ["op"],
            registry=r,
        )
        # One series per configured engine (sshgw engine add); removed with the engine.
        self.engine_up = Gauge(
            "sshgw_engine_up",
            "1 while the engine answers (its events stream is open), by engine.",
            ["engine"],
            registry=r,
        )
        self.engine_containers = Gauge(
            "sshgw_engine_containers",
            "Containers the gateway knows on the engine (its directory), by engine.",
            ["engine"],
            registry=r,
        )

        # SFTP / SCP file operations.
        self.sftp_ops = Counter(
            "sshgw_sftp_operations",
            "SFTP/SCP file operations, by operation and result (ok, error, denied).",
            ["op", "result"],
            registry=r,
        )
        self.sftp_seconds = Histogram(
            "sshgw_sftp_operation_seconds",
            "SFTP/SCP file operation latency, by operation.",
            ["op"],
            buckets=_SFTP_BUCKETS,
            registry=r,
        )

        # Audit trail and recordings.
        self.audit_written = Counter(
            "sshgw_audit_records_written",
            "Audit records (events and session rows) written to the database.",
            registry=r,
        )
        self.audit_buffered = Gauge(
            "sshgw_audit_records_buffered",
            "Audit records waiting in memory for the database.",
            registry=r,
        )
        self.audit_dropped = Counter(
            "sshgw_audit_records_dropped",
            "Audit records lost, by reason (buffer_full: the database was unreachable for too "
            "long; rejected: the database refused the record).",
            ["reason"],
            registry=r,
        )
        self.audit_write_errors = Counter(
            "sshgw_audit_write_errors",
            "Failed attempts to write a batch of audit records.",
            registry=r,
        )
        self.audit_db_up = Gauge(
            "sshgw_audit_database_up",
            "1 when the last audit write succeeded, 0 while records are held back.",
            registry=r,
        )
        self.audit_db_up.set(1)
        self.recording_errors = Counter(
            "sshgw_recording_errors",
            "Session recordings that could not be written (opened or appended).",
            registry=r,
        )
        self.recordings_started = Counter(
            "sshgw_recordings_started",
            "Session recordings started.",
            registry=r,
        )

        # Pre-create the common series so dashboards and rate() see them from the start.
        for k in SessionKind:
            if not container_label:
                self.sessions_active.labels(kind=k)
                self.sessions_started.labels(kind=k, result="ok")
        for method in ("publickey", "password", "keyboard-interactive"):
            for res in ("success", "failure"):
                self.auth_attempts.labels(method=method, result=res)
        for reason in ("buffer_full", "rejected"):
            self.audit_dropped.labels(reason=reason)
        for reason in ("startups", "per_source"):
            self.startups_refused.labels(reason=reason)
        for reason in PROXY_HEADER_REASONS:
            self.proxy_header_refused.labels(reason=reason)
        self.channels_refused.labels(reason="max_sessions")
        self.forward_opens.labels(result="ok", via="direct")
        self.forward_opens.labels(result="ok", via="relay")
        self.forward_opens.labels(result="denied", via="none")

    def kind_labels(self, kind: str, container: str | None) -> dict[str, str]:
        if self.container_label:
            return {"kind": kind, "container": container or ""}
        return {"kind": kind}

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
