"""The API reference at ``/docs``: HTML that Tally renders from its own OpenAPI document.

Why not a JavaScript viewer: the page must work offline and in air-gapped
deployments, under a Content-Security-Policy that allows nothing but Tally itself
(no ``'unsafe-inline'``, no third party). Redoc's standalone bundle injects
``<style>`` elements and starts ``blob:`` workers, and Swagger UI sets ``style``
attributes, so both need ``'unsafe-inline'`` styles (and Redoc ``blob:``) to render
properly; vendoring either is also megabytes of minified third-party code to keep
patched. The document is built from the route table at start-up, so this page is
too: one HTML page and one stylesheet (``reference.css``, beside this module), no
script at all. Everything taken from the document is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

STYLESHEET_PATH = "/docs/reference.css"
# Nothing but this origin's stylesheet: no script, image, font, frame or form.
CSP = (
    "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_REF_PREFIX = "#/components/schemas/"
_CODE = re.compile(r"`([^`]+)`")
_METHODS = ("get", "post", "patch", "put", "delete")
# Schema keywords rendered as constraints, in this order, with their wording.
_CONSTRAINTS = (
    ("minimum", "≥ {}"),
    ("maximum", "≤ {}"),
    ("minLength", "at least {} character(s)"),
    ("maxLength", "at most {} character(s)"),
    ("minItems", "at least {} item(s)"),
    ("maxItems", "at most {} item(s)"),
    ("maxProperties", "at most {} key(s)"),
    ("format", "format {}"),
    ("default", "default {}"),
)


def stylesheet() -> bytes:
    return resources.files("tally.api").joinpath("reference.css").read_bytes()


def render(document: dict[str, Any]) -> str:
    """The whole page, from the OpenAPI document."""
    operations = list(_operations(document))
    tags = list(dict.fromkeys(tag for tag, *_ in operations))
    schemas: dict[str, Any] = document["components"]["schemas"]
    info = document["info"]
    body = [
        f"<header><h1>{_text(info['title'])} API reference "
        f"<small>version {_text(info['version'])}</small></h1>",
        f"<p>{_prose(info.get('description', ''))}</p>",
        f"<p>The OpenAPI {_text(document['openapi'])} document: "
        '<a href="/openapi.json">/openapi.json</a>.</p></header>',
        _nav(tags, operations, schemas),
        "<main>",
        *(_tag_section(tag, [o for o in operations if o[0] == tag]) for tag in tags),
        _schemas_section(schemas),
        "</main>",
    ]
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_text(info['title'])} API reference</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="stylesheet" href="{STYLESHEET_PATH}"></head>\n<body>\n'
        + "\n".join(body)
        + "\n</body></html>\n"
    )


Operation = tuple[str, str, str, dict[str, Any]]  # tag, path, method, operation


def _operations(document: dict[str, Any]) -> Iterator[Operation]:
    for path, item in document["paths"].items():
        for method in _METHODS:
            if method in item:
                operation = item[method]
                yield (operation.get("tags") or ["Other"])[0], path, method, operation


def _nav(tags: list[str], operations: list[Operation], schemas: dict[str, Any]) -> str:
    parts = ['<nav aria-label="Contents"><h2>Contents</h2><ul>']
    for tag in tags:
        parts.append(f'<li><a href="#{_tag_id(tag)}">{_text(tag)}</a><ul>')
        for _, path, method, op in (o for o in operations if o[0] == tag):
            parts.append(
                f'<li><a href="#{_op_id(op)}"><span class="method {method}">'
                f"{method.upper()}</span> {_text(path)}</a></li>"
            )
        parts.append("</ul></li>")
    parts.append('<li><a href="#schemas">Schemas</a><ul>')
    parts += [f'<li><a href="#{_schema_id(n)}">{_text(n)}</a></li>' for n in schemas]
    parts.append("</ul></li></ul></nav>")
    return "".join(parts)


def _tag_section(tag: str, operations: list[Operation]) -> str:
    inner = "\n".join(_operation(path, method, op) for _, path, method, op in operations)
    return f'<section id="{_tag_id(tag)}"><h2>{_text(tag)}</h2>\n{inner}</section>'


def _operation(path: str, method: str, op: dict[str, Any]) -> str:
    parts = [
        f'<section class="operation" id="{_op_id(op)}">',
        f'<h3><span class="method {method}">{method.upper()}</span> '
        f"<code>{_text(path)}</code></h3>",
        f"<p><strong>{_prose(op.get('summary', ''))}</strong></p>",
    ]
    if op.get("description"):
        parts.append(f"<p>{_prose(op['description'])}</p>")
    if op.get("security") == []:
        parts.append("<p>No credential.</p>")
    if op.get("parameters"):
        parts.append(_parameters(op["parameters"]))
    if "requestBody" in op:
        parts.append(_request_body(op["requestBody"]))
    parts.append(_responses(op["responses"]))
    parts.append("</section>")
    return "\n".join(parts)


def _parameters(parameters: list[dict[str, Any]]) -> str:
    rows = []
    for p in parameters:
        name = p["name"] + ("[key]" if p.get("style") == "deepObject" else "")
        # A parameter has a schema, or (GraphQL's JSON variables) a media type and its schema.
        schema = p["schema"] if "schema" in p else next(iter(p["content"].values()))["schema"]
        notes = [_constraints(schema), _prose(p.get("description", ""))]
        rows.append(
            f"<tr><td><code>{_text(name)}</code></td><td>{_text(p['in'])}</td>"
            f"<td>{_type(schema)}</td><td>{'yes' if p.get('required') else 'no'}</td>"
            f"<td>{'; '.join(n for n in notes if n)}</td></tr>"
        )
    return (
        "<h4>Parameters</h4><table><thead><tr><th>name</th><th>in</th><th>type</th>"
        f"<th>required</th><th>rules</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _request_body(body: dict[str, Any]) -> str:
    rows = []
    for media_type, content in body["content"].items():
        schema = content.get("schema", {})
        rules = _composition(schema)
        rows.append(
            f"<li><code>{_text(media_type)}</code>: {_type(schema)}"
            f"{f' ({rules})' if rules else ''}</li>"
        )
    required = "required" if body.get("required") else "optional"
    return f"<h4>Request body ({required})</h4><ul>{''.join(rows)}</ul>"


def _responses(responses: dict[str, Any]) -> str:
    rows = []
    for status, response in responses.items():
        content = response.get("content", {})
        kinds = [
            f"<code>{_text(media)}</code>" + (f": {_type(c['schema'])}" if c.get("schema") else "")
            for media, c in content.items()
        ]
        headers = ", ".join(f"<code>{_text(h)}</code>" for h in response.get("headers", {}))
        rows.append(
            f"<tr><td>{_text(status)}</td><td>{_prose(response.get('description', ''))}"
            f"{f' Headers: {headers}.' if headers else ''}</td><td>{'<br>'.join(kinds)}</td></tr>"
        )
    return (
        "<h4>Responses</h4><table><thead><tr><th>status</th><th>meaning</th>"
        f"<th>body</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _schemas_section(schemas: dict[str, Any]) -> str:
    parts = ['<section id="schemas"><h2>Schemas</h2>']
    for name, schema in schemas.items():
        parts.append(f'<section class="schema" id="{_schema_id(name)}"><h3>{_text(name)}</h3>')
        if schema.get("description"):
            parts.append(f"<p>{_prose(schema['description'])}</p>")
        if "properties" in schema:
            parts.append(_properties(schema))
        else:
            parts.append(f"<p>{_type(schema)}. {_constraints(schema)}</p>")
        rules = _composition(schema)
        if rules:
            parts.append(f"<p>Also: {rules}.</p>")
        parts.append("</section>")
    parts.append("</section>")
    return "\n".join(parts)


def _properties(schema: dict[str, Any]) -> str:
    required = set(schema.get("required", ()))
    rows = []
    for name, prop in schema["properties"].items():
        notes = [_constraints(prop), _prose(prop.get("description", ""))]
        rows.append(
            f"<tr><td><code>{_text(name)}</code></td><td>{_type(prop)}</td>"
            f"<td>{'yes' if name in required else 'no'}</td>"
            f"<td>{'; '.join(n for n in notes if n)}</td></tr>"
        )
    return (
        "<table><thead><tr><th>field</th><th>type</th><th>required</th><th>rules</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _type(schema: Any) -> str:
    """What a value is, in words, linking to the schemas it names."""
    if not isinstance(schema, dict) or not schema:
        return "any JSON value"
    if "$ref" in schema:
        name = str(schema["$ref"]).removeprefix(_REF_PREFIX)
        return f'<a href="#{_schema_id(name)}">{_text(name)}</a>'
    for key in ("anyOf", "oneOf"):
        if key in schema and "properties" not in schema and "allOf" not in schema:
            return " or ".join(_type(s) for s in schema[key])
    if "allOf" in schema:
        return " and ".join(_type(s) for s in schema["allOf"])
    if "const" in schema:
        return f"<code>{_text(json.dumps(schema['const']))}</code>"
    types = schema.get("type", "object" if "properties" in schema else "")
    names = [types] if isinstance(types, str) else list(types)
    words = []
    for t in names:
        if t == "array":
            words.append(f"array of {_type(schema.get('items'))}")
        elif t == "object" and isinstance(schema.get("additionalProperties"), dict):
            words.append(f"object of string keys to {_type(schema['additionalProperties'])}")
        else:
            words.append(_text(t) or "any JSON value")
    return " or ".join(words)


def _constraints(schema: dict[str, Any]) -> str:
    parts = [
        _plural(template, json.dumps(schema[key]) if key == "default" else str(schema[key]))
        for key, template in _CONSTRAINTS
        if key in schema
    ]
    if "enum" in schema:
        values = ", ".join(f"<code>{_text(json.dumps(v))}</code>" for v in schema["enum"])
        parts.append(f"one of {values}")
    if "pattern" in schema:
        parts.append(f"matches <code>{_text(schema['pattern'])}</code>")
    for key, label in (("propertyNames", "keys"), ("additionalProperties", "values")):
        inner = schema.get(key)
        if isinstance(inner, dict) and _constraints(inner):
            parts.append(f"{label}: {_constraints(inner)}")
    # A nullable field is anyOf [its schema, null]: its schema's rules are the rules.
    for branch in schema.get("anyOf", ()):
        if isinstance(branch, dict) and "$ref" not in branch and _constraints(branch):
            parts.append(_constraints(branch))
        if isinstance(branch, dict) and branch.get("description"):
            parts.append(_prose(branch["description"]))
    return "; ".join(parts)


def _visible(text: str) -> str:
    """Control characters (the NUL of a "no NUL" pattern) written as escapes: HTML
    has no place for them."""
    return "".join(c if c.isprintable() or c in "\n\t" else f"\\u{ord(c):04x}" for c in text)


def _plural(template: str, value: str) -> str:
    words = template.format(_text(value))
    return words.replace("(s)", "" if value == "1" else "s")


def _composition(schema: dict[str, Any]) -> str:
    """Rules that tie several fields together (``not``, ``anyOf`` beside properties),
    in words when the document has them (a description), else as JSON Schema."""
    if schema.get("description"):
        return _prose(schema["description"]) if "properties" not in schema else ""
    keys = [k for k in ("not", "anyOf", "oneOf", "allOf") if k in schema]
    if "properties" not in schema and "allOf" not in schema:
        keys = [k for k in keys if k == "not"]
    elif "allOf" in schema:
        keys = [k for k in keys if k != "allOf"]
    return "; ".join(f"<code>{_text(k)}: {_text(json.dumps(schema[k]))}</code>" for k in keys)


def _prose(text: str) -> str:
    """Escaped text, with the document's `code` spans as <code>."""
    return _CODE.sub(r"<code>\1</code>", _text(text))


def _text(value: object) -> str:
    return html.escape(_visible(str(value)), quote=True)


def _op_id(op: dict[str, Any]) -> str:
    return "op-" + _slug(op["operationId"])


def _schema_id(name: str) -> str:
    return "schema-" + _slug(name)


def _tag_id(tag: str) -> str:
    return "tag-" + _slug(tag)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")
