"""A running ``sshgw serve`` for end-to-end tests, driven by the real OpenSSH client.

``gateway`` (module scope) starts one gateway per test module on free ports with a fresh data
directory (SQLite database, host keys). Tests make their own users (``gateway.add_user``), grants
(``gateway.grant``) and containers (``make_container``), with unique names, so they run in any order.
``gateway_factory`` starts extra gateways with other settings (for example password auth off).

When a test fails, the part of the gateway log written during that test is attached to the report.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.helpers import Gateway, GatewayFactory


@pytest.fixture(scope="module")
def gateway_factory(
    tmp_path_factory: pytest.TempPathFactory, docker_host: str
) -> Iterator[GatewayFactory]:
    """Start gateways with extra ``SSHGW_*`` settings: ``gateway_factory({"SSHGW_X": "y"})``."""
    factory = GatewayFactory(tmp_path_factory)
    yield factory
    factory.stop_all()


@pytest.fixture(scope="module")
def gateway(gateway_factory: GatewayFactory) -> Gateway:
    """A gateway on a free port with a fresh SQLite database; MOTD set to ``MOTD``."""
    return gateway_factory()


_LOG_OFFSETS = pytest.StashKey[dict[int, int]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    funcargs = getattr(item, "funcargs", {})
    gateways: list[Gateway] = []
    if isinstance(funcargs.get("gateway"), Gateway):
        gateways.append(funcargs["gateway"])
    factory = funcargs.get("gateway_factory")
    if isinstance(factory, GatewayFactory):
        gateways += [g for g in factory.running if g not in gateways]
    if call.when == "setup":
        item.stash[_LOG_OFFSETS] = {id(g): g.log_size() for g in gateways}
    elif report.failed and gateways:  # type: ignore[attr-defined]
        offsets = item.stash.get(_LOG_OFFSETS, {})
        for g in gateways:
            text = g.log(offsets.get(id(g), 0))
            report.sections.append(  # type: ignore[attr-defined]
                (f"gateway log (port {g.port})", text[-20000:])
            )
    return report  # type: ignore[return-value]
