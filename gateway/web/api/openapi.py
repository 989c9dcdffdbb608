"""The OpenAPI 3.1 document of the admin API, made from the route table and the pydantic
models (their JSON Schema is OpenAPI 3.1's dialect); pure.

A small generator rather than a framework: aiohttp-pydantic (the library that does this for
aiohttp) wants class-based views, answers bad input in its own shape and writes OpenAPI 3.0 by
default; the table here is the one the wrapper in :mod:`gateway.web.api.routes` runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from gateway import __version__
from gateway.routing import USER_RE
from gateway.web.api.models import Error

if TYPE_CHECKING:
    from gateway.web.api.base import Route

REF = "#/components/schemas/{model}"
SESSION_REF = "^[0-9a-f-]{4,36}$"  # a session id or a prefix (gateway.store.sessions)
PARAM_SCHEMA = {
    "name": {"type": "string", "pattern": USER_RE.pattern},
    "ref": {"type": "string", "pattern": SESSION_REF},
    "id": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
}


class _Schemas:
    """``components.schemas``: each model once, its nested models beside it."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}

    def ref(self, model: type[BaseModel], mode: str) -> dict[str, str]:
        schema = model.model_json_schema(ref_template=REF, mode=mode)  # type: ignore[arg-type]
        for name, sub in schema.pop("$defs", {}).items():
            self.schemas.setdefault(name, sub)
        self.schemas.setdefault(model.__name__, schema)
        return {"$ref": REF.format(model=model.__name__)}

    def inline(self, model: type[BaseModel]) -> dict[str, Any]:
        schema = model.model_json_schema(ref_template=REF, mode="validation")
        for name, sub in schema.pop("$defs", {}).items():
            self.schemas.setdefault(name, sub)
        return schema


def _parameters(route: Route, schemas: _Schemas) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": PARAM_SCHEMA[kind]}
        for name, kind in route.params.items()
    ]
    if route.query is not None:
        schema = schemas.inline(route.query)
        required = set(schema.get("required", ()))
        for name, prop in schema.get("properties", {}).items():
            param: dict[str, Any] = {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": {k: v for k, v in prop.items() if k not in ("title", "description")},
            }
            if "description" in prop:
                param["description"] = prop["description"]
            params.append(param)
    return params


def _operation(route: Route, schemas: _Schemas) -> dict[str, Any]:
    error = {"description": "An error", "content": {"application/json": {"schema": schemas.ref(Error, "serialization")}}}  # fmt: skip
    ok: dict[str, Any] = {"description": route.summary}
    if route.ok is not None:
        ok["content"] = {"application/json": {"schema": schemas.ref(route.ok, "serialization")}}
    elif route.media is not None:
        ok["content"] = {route.media: {"schema": {"type": "string"}}}
    op: dict[str, Any] = {
        "operationId": f"{route.method.lower()}{route.path.replace('/', '_').replace('{', '').replace('}', '')}",
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": _parameters(route, schemas),
        "responses": {str(route.status): ok, "default": error},
    }
    if route.body is not None:
        op["requestBody"] = {
            "required": route.status == 201,
            "content": {"application/json": {"schema": schemas.ref(route.body, "validation")}},
        }
    if route.write:
        op["description"] = "Needs a token of scope admin; the change is audited with its name."
    return op


def document(routes: tuple[Route, ...], prefix: str) -> dict[str, Any]:
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(prefix + route.path, {})[route.method.lower()] = _operation(route, schemas)
    paths[prefix + "/openapi.json"] = {
        "get": {
            "operationId": "get_openapi",
            "summary": "This document",
            "security": [],
            "responses": {"200": {"description": "The OpenAPI document"}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "sshgw admin API",
            "version": __version__,
            "description": "The operations of the sshgw CLI over HTTP. Authenticate with "
            "`Authorization: Bearer TOKEN` (`sshgw token add NAME --scope read|admin`).",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
