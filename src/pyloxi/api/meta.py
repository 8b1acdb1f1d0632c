"""GET /meta (loxilb handler/metadata.go): the fields of every POST and PUT body, derived from
this API's own OpenAPI document (so it cannot drift from what the routes accept). No token
needed, as in loxilb (`security: []`).

    {"/config/loadbalancer": {"method": "POST", "fields": {
        "serviceArguments": {"externalIP": {"type": "string", "required": true, ...}, ...},
        "endpoints": {"type": "array", "required": false, "items": {...}}, ...}}, ...}

The shape is loxilb's: paths relative to the base path; an object's properties nest by name; a
leaf is {type, required[, format, description, enum]}; an array is {type: "array", required,
items}; path and query parameters appear beside the body's fields as {type, required}.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from pyloxi.api.errors import LoxiRoute

_REF = "#/components/schemas/"
_MAX_DEPTH = 12  # a self-referencing schema ends here instead of recursing forever


def _resolve(schema: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while "$ref" in schema and seen < _MAX_DEPTH:
        ref = str(schema["$ref"])
        target = components.get(ref[len(_REF):]) if ref.startswith(_REF) else None
        if not isinstance(target, dict):
            return {}
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        seen += 1
    # pydantic writes Optional[X] as anyOf [X, null] and some refs as allOf [X]
    for key in ("anyOf", "oneOf", "allOf"):
        choices = schema.get(key)
        if isinstance(choices, list):
            real = [c for c in choices if isinstance(c, dict) and c.get("type") != "null"]
            if real:
                rest = {k: v for k, v in schema.items() if k != key}
                return _resolve({**real[0], **rest}, components)
    return schema


def _leaf(schema: dict[str, Any], kind: str, required: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "required": required}
    for key in ("format", "description", "enum"):
        if key in schema:
            out[key] = schema[key]
    return out


def describe(schema: dict[str, Any], components: dict[str, Any], required: bool,
             depth: int = 0) -> dict[str, Any]:
    """One schema in loxilb's metadata shape."""
    schema = _resolve(schema, components)
    kind = str(schema.get("type") or ("object" if "properties" in schema else "unknown"))
    if depth >= _MAX_DEPTH:
        return {"type": kind, "required": required}
    if kind == "object" and isinstance(schema.get("properties"), dict):
        needed = set(schema.get("required", ()))
        out: dict[str, Any] = {
            name: describe(sub, components, name in needed, depth + 1)
            for name, sub in schema["properties"].items() if isinstance(sub, dict)}
        for key in ("format", "description", "enum"):
            if key in schema:
                out[key] = schema[key]
        return out
    if kind == "array":
        items = schema.get("items")
        described = (describe(items, components, False, depth + 1)
                     if isinstance(items, dict) else {"type": "unknown"})
        return {**_leaf(schema, "array", required), "items": described}
    return _leaf(schema, kind, required)


def metadata(document: dict[str, Any], prefix: str) -> dict[str, Any]:
    components = document.get("components", {}).get("schemas", {})
    meta: dict[str, Any] = {}
    for path, item in sorted(document.get("paths", {}).items()):
        for method in ("post", "put"):
            op = item.get(method)
            if not isinstance(op, dict):
                continue
            fields: dict[str, Any] = {}
            for param in op.get("parameters", ()):
                if param.get("in") in ("path", "query"):
                    kind = _resolve(param.get("schema", {}), components).get("type", "string")
                    fields[param["name"]] = {"type": kind,
                                             "required": bool(param.get("required"))}
            body = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            if isinstance(body.get("schema"), dict):
                described = describe(body["schema"], components, True)
                if _resolve(body["schema"], components).get("properties"):
                    fields.update(described)
                else:
                    fields["body"] = described
            key = path[len(prefix):] if path.startswith(prefix) else path
            meta[key] = {"method": method.upper(), "fields": fields}
    return meta


def meta_router(prefix: str) -> APIRouter:
    router = APIRouter(tags=["metadata"], route_class=LoxiRoute)

    @router.get("/meta", summary="Fields of every POST and PUT body (from the OpenAPI document)")
    def get_meta(request: Request) -> dict[str, Any]:
        return metadata(request.app.openapi(), prefix)

    return router
