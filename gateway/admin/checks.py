"""``sshgw check`` and ``POST /api/v1/check``: would USER get RIGHT on CONTAINER? The same
decision as a real session (:func:`gateway.ssh.authorize.decide_access`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.engines.base import AmbiguousContainer
from gateway.errors import EngineUnavailable, InvalidInput, NoSuchContainer
from gateway.policy import KNOWN_RIGHTS, Decision, Right, format_ports
from gateway.ssh.authorize import decide_access
from gateway.store import Store

if TYPE_CHECKING:  # the engines' package imports aiodocker: slow for every CLI command
    from gateway.engines.base import Container, Engine


@dataclass
class CheckResult:
    user: str
    ref: str  # the container as asked for
    decision: Decision
    container: Container | None
    warnings: list[str] = field(default_factory=list)
    user_disabled: bool = False
    user_found: bool = True


def check_request(right: str, port: int | None) -> None:
    """Refuse a question that makes no sense, with one line."""
    if right not in KNOWN_RIGHTS:
        raise InvalidInput(f"unknown right {right!r}; known: {', '.join(sorted(KNOWN_RIGHTS))}")
    if port is not None and right != Right.FORWARD:
        raise InvalidInput("--port goes with --right forward")
    if port is not None and not 1 <= port <= 65535:
        raise InvalidInput(f"port {port} is not a TCP port (1-65535)")


async def evaluate(
    store: Store,
    engine: Engine,
    user: str,
    ref: str,
    right: str,
    login: str | None,
    port: int | None = None,
) -> CheckResult:
    check_request(right, port)
    auth = await store.auth_user(user)
    grants = await store.grants_for(user) if auth is not None else []
    if auth is None:
        return CheckResult(
            user, ref, Decision(False, right, f"deny: no such user: {user}"), None, user_found=False
        )
    warnings: list[str] = []
    container: Container | None = None
    try:
        container = await engine.resolve(ref)
    except AmbiguousContainer as exc:  # an admin sees every engine that has it
        warnings.append(f"{exc.naming(exc.candidates).user_message}; evaluated by name only")
    except NoSuchContainer:
        warnings.append(
            f"container {ref} is unknown to the Docker engine: evaluated by name only, "
            "without labels"
        )
    except EngineUnavailable as exc:
        warnings.append(
            f"Docker engine unreachable ({exc.user_message}): evaluated by name only, "
            "without labels"
        )
    if container is not None and not container.running:
        warnings.append(
            f"container {container.name} is {container.state}: a session would fail until it runs"
        )
    decision = decide_access(
        user, auth.groups, grants, container or ref, right, login, disabled=auth.disabled, port=port
    )
    return CheckResult(user, ref, decision, container, warnings, user_disabled=auth.disabled)


def check_view(result: CheckResult) -> dict[str, Any]:
    d = result.decision
    return {
        "allowed": d.allowed,
        "user": result.user,
        "container": result.container.name if result.container else result.ref,
        "container_id": result.container.id if result.container else None,
        "engine": result.container.engine if result.container else None,
        "right": d.right,
        "login": d.login,
        "grant": d.grant.id if d.grant else None,
        "reason": str(d.reason) if d.reason else None,
        "message": d.message,
        "paths": list(d.paths),
        "port": d.port,
        "ports": format_ports(d.ports) if d.right == Right.FORWARD else None,
        "record": d.record,
        "warnings": result.warnings,
    }
