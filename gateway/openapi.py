"""The OpenAPI 3 document of the gateway, generated from the check registry's declarations."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
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
        "location": {"type": "string"},
        "result_url": {"type": "string"},
        "error": {
            "oneOf": [
                {"type": "string"},
                {"type": "object", "properties": {"type": {"type": "string"}, "message": {"type": "string"}}},
            ]
        },
    },
}
# A check run in several locations (gateway/locations.py): each location's Answer (with its HTTP
# `status`) and the verdict; async and fire answers carry each location's id only.
_FANOUT = {
    "type": "object",
    "required": ["type", "state", "locations"],
    "properties": {
        "type": {"type": "string"},
        "state": {"type": "string", "enum": ["SUCCESS", "PENDING", "SENT"]},
        "ok": {"type": "boolean", "nullable": True, "description": "the verdict; null when undecided (504)"},
        "require": {"type": "string", "description": "all, any or a number of locations"},
        "needed": {"type": "integer"},
        "passed": {"type": "integer"},
        "failed": {"type": "integer"},
        "undecided": {"type": "integer"},
        "duration_ms": {"type": "number"},
        "error": {"type": "string"},
        "skipped": {"type": "array", "items": {"type": "string"}},
        "locations": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "required": ["status"],
                "properties": {"status": {"type": "integer"}, "error": _ANSWER["properties"]["error"]},
            },
        },
    },
}
_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "field": {"type": "string"},
        "retry_after": {"type": "integer"},
        "locations": {"type": "array", "items": {"type": "string"}},
    },
}


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": schema_ref}}}}


def _answers(description: str, text: bool = False) -> dict[str, Any]:
    """A response of /check: one location's Answer, or a fan-out's (`text`: format=prometheus too)."""
    schema = {"anyOf": [{"$ref": "#/components/schemas/Answer"}, {"$ref": "#/components/schemas/FanoutAnswer"}]}
    content: dict[str, Any] = {"application/json": {"schema": schema}}
    if text:
        content["text/plain"] = {"schema": {"type": "string"}}
    return {"description": description, "content": content}


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


def _location_params(locations: Sequence[str]) -> list[dict[str, Any]]:
    """`location` and `require` (gateway/locations.py), documented when the deployment has locations.

    Their values are listed: `all`, each location, and the comma-separated lists in the configured order
    (any order is accepted; for more than 5 locations only single names are listed)."""
    lists = [
        ",".join(combo)
        for size in range(2, len(locations) + 1 if len(locations) <= 5 else 2)
        for combo in itertools.combinations(locations, size)
    ]
    return [
        {
            "name": "location",
            "in": "query",
            "description": "run it in this location (its usual answer, with `location`), in each of a "
            "comma-separated list, or in every location with a live consumer (all): one answer per location "
            "and the verdict (FanoutAnswer). A named location with no live consumer is a 503 naming it.",
            "schema": {"type": "string", "enum": ["all", *locations, *lists]},
        },
        {
            "name": "require",
            "in": "query",
            "description": "with a list or all, in sync mode: how many locations must pass for `ok` "
            "(all: every one; default all); at most the number named",
            "schema": {"type": "string", "enum": ["all", "any", *(str(n) for n in range(1, len(locations) + 1))]},
        },
    ]


def _check_operation(check: CheckType, locations: Sequence[str] = ()) -> dict[str, Any]:
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
    if locations:
        params += _location_params(locations)
    return {
        "summary": (check.doc.splitlines() or [check.name])[0],
        "description": check.doc,
        "operationId": f"check_{check.name}",
        "parameters": params,
        "responses": _edge(
            {
                "200": _answers(
                    "the check ran (a target that is down is ok: false); in several locations: the verdict was decided",
                    text=True,
                ),
                "202": _answers("accepted (async, fire)"),
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
                "503": _json(
                    "#/components/schemas/Error",
                    "overloaded, broker/backend down, or a location with no live consumer (`locations` names "
                    "them); see Retry-After",
                ),
                "504": _answers("deadline passed (poll result_url); in several locations: too few answered to decide"),
            }
        ),
    }


def openapi_document(checks: Mapping[str, CheckType], locations: Sequence[str] = ()) -> dict[str, Any]:
    """The whole API: one path per check type plus /add, /result, /checks, /health, /schedule, /metrics and
    this document's own path, each with every status code it can answer (the HTTP edge's included);
    `locations`: the deployment's (CHECKGATE_LOCATIONS), which add `location` and `require` to every check."""
    paths: dict[str, Any] = {
        f"/check/{name}": {"get": _check_operation(c, locations)} for name, c in sorted(checks.items())
    }
    if "add" in checks:
        add = dict(
            _check_operation(checks["add"], locations), operationId="add_legacy", summary="tornado-celery's /add"
        )
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
        "components": {"schemas": {"Answer": _ANSWER, "FanoutAnswer": _FANOUT, "Error": _ERROR}},
    }
