"""The OpenAPI 3 document of the gateway, generated from the check registry's declarations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks.registry import CheckType, Param

_TYPES = {int: "integer", float: "number", bool: "boolean", str: "string"}

_ANSWER = {
    "type": "object",
    "required": ["id", "type", "state"],
    "properties": {
        "id": {"type": "string"},
        "type": {"type": "string"},
        "state": {"type": "string", "enum": ["SUCCESS", "FAILURE", "PENDING", "REVOKED", "EXPIRED", "SENT"]},
        "result": {"description": "what the check returned"},
        "duration_ms": {"type": "number"},
        "worker": {"type": "string"},
        "result_url": {"type": "string"},
        "error": {
            "oneOf": [
                {"type": "string"},
                {"type": "object", "properties": {"type": {"type": "string"}, "message": {"type": "string"}}},
            ]
        },
    },
}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "field": {"type": "string"}, "retry_after": {"type": "integer"}},
}


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": schema_ref}}}}


def _keyed() -> dict[str, Any]:
    """What a path that asks for an API key answers besides its own codes (when keys are configured)."""
    return {
        "401": _json("#/components/schemas/Error", "API key missing or invalid (when keys are configured)"),
        "429": _json("#/components/schemas/Error", "API key over its rate; see Retry-After"),
    }


def _edge(responses: dict[str, Any]) -> dict[str, Any]:
    """`responses` plus what the HTTP edge (gateway/edge.py) answers for any path before a handler runs."""
    edge = {
        "400": "malformed request line or header, or too many query parameters",
        "405": "a method other than GET and HEAD (Allow: GET, HEAD)",
        "408": "the request head or an accepted body did not arrive in time; the connection is closed",
        "413": "a request body (GET and HEAD take none)",
        "414": "request URI too long",
        "431": "request head too long",
    }
    out = dict(responses)
    for status, description in edge.items():
        out.setdefault(status, _json("#/components/schemas/Error", description))
    return out


def param_schema(param: Param) -> dict[str, Any]:
    """JSON schema of one declared parameter."""
    schema: dict[str, Any] = {"type": _TYPES.get(param.type, "string")}
    if param.choices is not None:
        schema["enum"] = list(param.choices)
    if param.min is not None:
        schema["minimum"] = param.min
    if param.max is not None:
        schema["maximum"] = param.max
    if param.type is str:
        schema["minLength"] = 1
        schema["maxLength"] = param.max_length
    if not param.required and param.default is not None:
        schema["default"] = param.default
    return schema


def _check_operation(check: CheckType) -> dict[str, Any]:
    params = [
        {"name": p.name, "in": "query", "required": p.required, "description": p.doc, "schema": param_schema(p)}
        for p in check.params
    ]
    params += [
        {"name": "mode", "in": "query", "schema": {"type": "string", "enum": ["sync", "async", "fire"]}},
        {
            "name": "timeout",
            "in": "query",
            "description": "seconds to wait (sync) and after which the task expires",
            "schema": {"type": "number", "minimum": check.min_timeout, "maximum": check.max_timeout},
        },
        {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "prometheus"]}},
    ]
    return {
        "summary": (check.doc.splitlines() or [check.name])[0],
        "description": check.doc,
        "operationId": f"check_{check.name}",
        "parameters": params,
        "responses": _edge(
            {
                "200": {
                    "description": "the check ran (a target that is down is ok: false)",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Answer"}},
                        "text/plain": {"schema": {"type": "string"}},
                    },
                },
                "202": _json("#/components/schemas/Answer", "accepted (async, fire)"),
                "400": _json("#/components/schemas/Error", "bad parameter; `field` names it"),
                "401": _json("#/components/schemas/Error", "API key missing or invalid (when keys are configured)"),
                "403": {
                    "description": "target refused by the address policy (Answer), or the key may not run this type",
                    "content": {
                        "application/json": {
                            "schema": {
                                "anyOf": [
                                    {"$ref": "#/components/schemas/Answer"},
                                    {"$ref": "#/components/schemas/Error"},
                                ]
                            }
                        }
                    },
                },
                "429": _json("#/components/schemas/Error", "API key over its rate; see Retry-After"),
                "502": _json("#/components/schemas/Answer", "the task raised"),
                "503": _json("#/components/schemas/Error", "overloaded or broker/backend down; see Retry-After"),
                "504": _json("#/components/schemas/Answer", "deadline passed; poll result_url"),
            }
        ),
    }


def openapi_document(checks: Mapping[str, CheckType]) -> dict[str, Any]:
    """The whole API: one path per check type plus /add, /result, /checks, /health, /schedule, /metrics and
    this document's own path, each with every status code it can answer (the HTTP edge's included)."""
    paths: dict[str, Any] = {f"/check/{name}": {"get": _check_operation(c)} for name, c in sorted(checks.items())}
    if "add" in checks:
        add = dict(_check_operation(checks["add"]), operationId="add_legacy", summary="tornado-celery's /add")
        paths["/add"] = {"get": add}
    paths["/result/{id}"] = {
        "get": {
            "operationId": "result",
            "summary": "State and result of an earlier check",
            "parameters": [
                {
                    "name": "id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
                }
            ],
            "responses": _edge(
                {
                    "200": _json("#/components/schemas/Answer", "done"),
                    "202": _json("#/components/schemas/Answer", "pending"),
                    "400": _json("#/components/schemas/Error", "malformed id"),
                    "401": _json("#/components/schemas/Error", "API key missing or invalid (when keys are configured)"),
                    "404": _json(
                        "#/components/schemas/Error", "unknown or expired id, or one of a type the API key may not run"
                    ),
                    "410": _json("#/components/schemas/Answer", "EXPIRED: no result came by the deadline; final"),
                    "429": _json("#/components/schemas/Error", "API key over its rate; see Retry-After"),
                    "502": _json("#/components/schemas/Answer", "the task raised"),
                    "503": _json("#/components/schemas/Error", "backend down, or the gateway out of file descriptors"),
                    "504": _json("#/components/schemas/Answer", "revoked, or ended at its deadline"),
                }
            ),
        }
    }
    plain = {"type": "object"}
    for path, summary in (("/checks", "Declared check types"), ("/health", "Broker, backend, workers per queue")):
        responses = _edge({"200": {"description": summary, "content": {"application/json": {"schema": plain}}}})
        if path == "/health":
            responses["503"] = {
                "description": "broker or backend down",
                "content": {"application/json": {"schema": plain}},
            }
        paths[path] = {"get": {"operationId": path.strip("/"), "summary": summary, "responses": responses}}
    paths["/schedule"] = {
        "get": {
            "operationId": "schedule",
            "summary": "The latest finished run of every scheduled check",
            "responses": _edge(
                {
                    "200": {"description": "name → answer", "content": {"application/json": {"schema": plain}}},
                    **_keyed(),
                    "503": _json("#/components/schemas/Error", "backend down"),
                }
            ),
        }
    }
    name_param = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
    paths["/schedule/{name}"] = {
        "get": {
            "operationId": "scheduled_run",
            "summary": "The latest finished run of one scheduled check",
            "parameters": [name_param],
            "responses": _edge(
                {
                    "200": _json("#/components/schemas/Answer", "its latest run"),
                    **_keyed(),
                    "404": _json(
                        "#/components/schemas/Error", "no finished run of that name (of a type the key may run)"
                    ),
                    "410": _json("#/components/schemas/Answer", "its latest run expired unrun"),
                    "502": _json("#/components/schemas/Answer", "its latest run raised"),
                    "503": _json("#/components/schemas/Error", "backend down"),
                    "504": _json("#/components/schemas/Answer", "its latest run was revoked"),
                }
            ),
        }
    }
    paths["/openapi.json"] = {
        "get": {
            "operationId": "openapi",
            "summary": "This document",
            "responses": _edge(
                {"200": {"description": "OpenAPI 3", "content": {"application/json": {"schema": plain}}}}
            ),
        }
    }
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics of the gateway",
            "responses": _edge(
                {"200": {"description": "text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}
            ),
        }
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "checkgate", "version": "1", "description": "Run checks on distributed Celery workers."},
        "paths": paths,
        "components": {"schemas": {"Answer": _ANSWER, "Error": _ERROR}},
    }
