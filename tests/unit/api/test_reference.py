"""The /docs page's renderer alone: what it makes of a document, hostile text included."""

from __future__ import annotations

from typing import Any

from tally.api import reference


def document(text: str) -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": text, "version": "1", "description": text},
        "paths": {
            "/v1/things": {
                "get": {
                    "operationId": "listThings",
                    "summary": text,
                    "description": text,
                    "tags": [text],
                    "parameters": [
                        {"name": text, "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {"200": {"description": text}},
                }
            }
        },
        "components": {
            "schemas": {
                "Thing": {
                    "type": "object",
                    "description": text,
                    "properties": {"name": {"type": "string", "pattern": text}},
                }
            }
        },
    }


def test_text_from_the_document_is_escaped_everywhere() -> None:
    hostile = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    html = reference.render(document(hostile))
    assert "<script" not in html
    assert "<img" not in html
    assert "&lt;script&gt;" in html


def test_code_spans_of_the_document_become_code_elements() -> None:
    html = reference.render(document("Send `Idempotency-Key` <b>"))
    assert "<code>Idempotency-Key</code>" in html
    assert "&lt;b&gt;" in html


def test_a_control_character_in_a_pattern_is_written_as_an_escape() -> None:
    html = reference.render(document("^[^\u0000]*$"))
    assert "\u0000" not in html
    assert "^[^\\u0000]*$" in html


def test_the_stylesheet_is_packaged_with_the_module() -> None:
    css = reference.stylesheet()
    assert b".operation" in css
    assert b"url(" not in css and b"@import" not in css
