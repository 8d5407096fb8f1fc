"""The OpenAPI 3.1 document of /api/v1 (served at /api/v1/openapi.json)."""

from __future__ import annotations

from typing import Any

from edgeml import __version__
from edgeml.store.queries import EVENT_KINDS

__all__ = ["OPENAPI"]

_PROBLEM = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
}


def _reply(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    body = schema or {"$ref": "#/components/schemas/Problem"}
    return {"description": description, "content": {"application/json": {"schema": body}}}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema,
            "description": description}  # fmt: skip


def _path(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1}}  # fmt: skip


_EPOCH = {"type": "number"}
_OBJ: dict[str, Any] = {"type": "object"}
_LIST = {"type": "array", "items": {"type": "object"}}
_ERRORS = {"503": _reply("the state file cannot be read"), "401": _reply("no or a wrong token")}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "edgeml",
        "version": __version__,
        "description": "The read API and on-demand predictions of an edgeml daemon "
        "(docs/http.md). With http.token_file set, every request needs "
        "`Authorization: Bearer <token>`.",
    },
    "components": {
        "schemas": {"Problem": _PROBLEM},
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    },
    "paths": {
        "/api/v1/status": {
            "get": {
                "summary": "The `edgeml status --json` document",
                "responses": {"200": _reply("daemon and streams", _OBJ), **_ERRORS},
            }
        },
        "/api/v1/events": {
            "get": {
                "summary": "Events, newest first (the `edgeml events --json` rows)",
                "parameters": [
                    _query("since", _EPOCH, "epoch seconds, inclusive"),
                    _query("until", _EPOCH, "epoch seconds, exclusive"),
                    _query("kind", {"type": "string", "enum": list(EVENT_KINDS)}, "repeatable"),
                    _query("stream", {"type": "string"}, "only this stream"),
                    _query("key", {"type": "string"}, "only this key"),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": 10000},
                        "at most this many (100)",
                    ),
                ],
                "responses": {
                    "200": _reply("events", _LIST),
                    "400": _reply("a parameter is not valid"),
                    **_ERRORS,
                },
            }
        },
        "/api/v1/history/{stream}/{key}": {
            "get": {
                "summary": "The error per interval and the model's events, as the report draws",
                "parameters": [
                    _path("stream"),
                    _path("key"),
                    _query("since", _EPOCH, "epoch seconds"),
                    _query(
                        "points",
                        {"type": "integer", "minimum": 1, "maximum": 5000},
                        "intervals (300)",
                    ),
                ],
                "responses": {
                    "200": _reply("buckets and marks", _OBJ),
                    "400": _reply("a parameter is not valid"),
                    "404": _reply("no such stream/key"),
                    **_ERRORS,
                },
            }
        },
        "/api/v1/models": {
            "get": {
                "summary": "Every model version and its parent (`edgeml models list --json`)",
                "parameters": [_query("stream", {"type": "string"}, "only this stream")],
                "responses": {"200": _reply("versions", _LIST), **_ERRORS},
            }
        },
        "/api/v1/predict/{stream}/{key}": {
            "post": {
                "summary": "The champion's prediction for these features; nothing is learned",
                "parameters": [_path("stream"), _path("key")],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "additionalProperties": True,
                                "description": "the features, as a reading of the stream has them",
                            }
                        }
                    },
                },
                "responses": {
                    "200": _reply("the prediction", _OBJ),
                    "400": _reply("the body is not JSON"),
                    "404": _reply("unknown stream or key"),
                    "409": _reply("the model cannot predict yet"),
                    "413": _reply("the body is too large"),
                    "422": _reply("a feature is missing, not a number or not finite"),
                    **_ERRORS,
                },
            }
        },
    },
    # The token is needed only when http.token_file is set.
    "security": [{"bearer": []}, {}],
}
