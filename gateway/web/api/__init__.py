"""The admin API under ``/api/v1``."""

from gateway.web.api.routes import add_routes

__all__ = ["add_routes"]
