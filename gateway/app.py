"""Wiring and lifecycle: start, serve, drain, stop."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from typing import Any

import asyncssh

from gateway import __version__
from gateway.config import Settings
from gateway.datadir import prepare_data_dir, private_umask
from gateway.engines import DockerEngine
from gateway.engines.fleet import EngineSpec, Fleet
from gateway.errors import EngineUnavailable, GatewayError
from gateway.observe import Observer
from gateway.observe.drain import drain
from gateway.observe.logs import setup_logging
from gateway.observe.replica import Replica
from gateway.ssh.hostkeys import ensure_host_keys
from gateway.ssh.jump import Jumps
from gateway.ssh.proxied import create_proxied_server
from gateway.ssh.server import Gateway, GatewayConnection
from gateway.store import Store, safe_url
from gateway.web.server import WebListener, start_web

log = logging.getLogger("gateway")

# AES-GCM first: measurably faster than chacha20 through a Python gateway.
ENCRYPTION_ALGS = [
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
]


def run(settings: Settings) -> int:
    """Run the gateway until SIGINT/SIGTERM. Returns the process exit status."""
    private_umask()  # the database, its -wal/-shm, recordings, spools: 0600 / 0700
    try:
        return asyncio.run(serve(settings))
    except KeyboardInterrupt:
        return 0


async def _prepare_store(settings: Settings) -> Store:
    store = Store.from_url(settings.effective_database_url)
    try:
        await store.ensure_schema()
    except BaseException:
        await store.close()
        raise
    return store


async def engine_specs(store: Store) -> list[EngineSpec]:
    return [
        EngineSpec(e.name, e.url, e.tls_ca, e.tls_cert, e.tls_key)
        for e in await store.list_engines()
    ]


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> int:
    setup_logging(settings)
    # Migration chatter is not news on every start.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, log.getEffectiveLevel()))
    host, port = settings.listen_address
    try:
        prepare_data_dir(settings)
        host_keys = ensure_host_keys(settings.effective_host_key_dir)
        store = await _prepare_store(settings)
    except GatewayError as exc:
        print(f"error: {exc.user_message}", file=sys.stderr)
        return 1
    # The engines in the database (read again every few seconds), else the local default one.
    engine = Fleet(
        DockerEngine(settings.docker_host, settings.docker_tls_verify, settings.docker_cert_path),
        limit=settings.engine_max_containers,
    )
    await engine.follow(lambda: engine_specs(store), settings.engine_poll_interval)
    try:
        await engine.ping()
    except EngineUnavailable as exc:
        # Not fatal: the engine may come up later; sessions say so clearly meanwhile.
        log.warning("%s", exc.user_message)
    replica = Replica(store, name=settings.replica_name, interval=settings.heartbeat_interval)
    observer = Observer(settings, store, engine, replica)
    # What every SSH connection gets: the listener's, and the inner ones of ProxyJump.
    ssh_options: dict[str, Any] = {
        "server_host_keys": host_keys,
        # No version number by default: nothing for a scanner to match against.
        "server_version": settings.server_version,
        "encoding": None,
        "line_editor": False,
        "login_timeout": settings.login_timeout,
        "agent_forwarding": False,
        "x11_forwarding": False,
        "allow_pty": True,
        "encryption_algs": ENCRYPTION_ALGS,
    }
    gw = Gateway(
        settings=settings,
        store=store,
        engine=engine,
        observer=observer,
        motd=settings.motd_text(),
        jumps=Jumps(**ssh_options) if settings.jump_port else None,
    )
    server: asyncssh.SSHAcceptor | None = None
    web: WebListener | None = None  # the admin API and web terminal (SSHGW_HTTP_LISTEN)
    try:
        await observer.start()
        keepalive = {
            "keepalive_interval": settings.keepalive_interval or None,
            "keepalive_count_max": 3,
        }
        if settings.proxy_protocol:  # behind a TCP balancer (gateway.ssh.proxied)
            server = await create_proxied_server(
                gw,
                lambda: GatewayConnection(gw),
                host,
                port,
                settings.proxy_networks,
                **keepalive,
                **ssh_options,
            )
            log.info("PROXY protocol required from %s", ", ".join(settings.proxy_from))
        else:
            server = await asyncssh.create_server(
                lambda: GatewayConnection(gw),
                host,
                port,
                reuse_address=True,
                **keepalive,
                **ssh_options,
            )
        bound = server.sockets[0].getsockname() if server.sockets else (host, port)
        log.info(
            "sshgw %s listening on %s:%s (database %s, Docker %s)",
            __version__,
            bound[0],
            bound[1],
            safe_url(settings.effective_database_url),
            engine.endpoint,
        )
        for k in host_keys:
            log.info("host key %s %s", k.get_algorithm(), k.get_fingerprint("sha256"))
        replica.address = f"{socket.gethostname()}:{bound[1]}"
        log.info("replica %s", replica.name)
        web = await start_web(gw)
        stop = asyncio.Event()
        signals: list[signal.Signals] = []

        def on_signal(sig: signal.Signals) -> None:
            signals.append(sig)
            stop.set()

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        if ready is not None:
            ready.set()
        await stop.wait()
        # SIGTERM (a balancer's replica taken out, systemd, docker stop) drains; SIGINT (^C)
        # stops at once, as does a second signal during the drain (gateway.observe.drain).
        if signals[0] == signal.SIGTERM and settings.drain_timeout > 0:
            server.close()  # new connections go to the other replicas
            stop.clear()
            await drain(observer, settings.drain_timeout, stop)
        log.info("shutting down")
        return 0
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except GatewayError as exc:
        print(f"error: {exc.user_message}", file=sys.stderr)
        return 1
    finally:
        if web is not None:
            await web.stop()
        if server is not None:
            server.close()
        gw.stopping.set()
        await gw.tasks.close(timeout=max(settings.kill_grace + 3.0, 5.0))
        if server is not None:
            await server.wait_closed()
        gw.limits.close()  # failed logins held back for the audit digest
        await observer.stop()
        await engine.close()
        await store.close()
