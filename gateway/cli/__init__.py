"""The ``sshgw`` command line (typer + rich).

One module per area registers its commands on :data:`app`. To add an area, write
``gateway/cli/<area>.py`` with a ``register(app)`` function and add one line to
:func:`_register`. Helpers for settings, the store, dates and output are in
:mod:`gateway.cli.common`.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from gateway import __version__
from gateway.cli.common import CliState
from gateway.datadir import private_umask
from gateway.errors import GatewayError

app = typer.Typer(
    name="sshgw",
    help="sshgw: an SSH gateway into Docker containers. Run `sshgw serve`, then manage users, "
    "keys, groups and grants.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        print(f"sshgw {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            envvar="SSHGW_CONFIG",
            metavar="FILE",
            help="TOML settings file (also SSHGW_CONFIG); SSHGW_* environment variables win.",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    ctx.obj = CliState(config_file=config)


def _register() -> None:
    from gateway.cli import admin, engines, grants, groups, keys, observe, users

    admin.register(app)
    app.add_typer(users.app, name="user")
    app.add_typer(keys.app, name="key")
    app.add_typer(groups.app, name="group")
    app.add_typer(grants.app, name="grant")
    app.add_typer(engines.app, name="engine")
    observe.register(app)  # audit, sessions, replay

    from gateway.cli import tokens

    app.add_typer(tokens.app, name="token")  # the admin API's tokens


_register()


def main() -> None:
    """Entry point of ``sshgw`` and ``python -m gateway``."""
    private_umask()  # the SQLite database and what SQLite makes beside it stay private
    try:
        app(prog_name="sshgw")
    except GatewayError as exc:
        print(f"error: {exc.user_message}", file=sys.stderr)
        sys.exit(exc.exit_status)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if os.environ.get("SSHGW_DEBUG"):
            traceback.print_exc()
        first = (str(exc).splitlines() or [""])[0][:300]
        print(
            f"error: internal error: {exc.__class__.__name__}: {first} "
            "(set SSHGW_DEBUG=1 for details)",
            file=sys.stderr,
        )
        sys.exit(1)
