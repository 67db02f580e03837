"""The published contract is checked in (docs/openapi.json), so that every change to
it shows in a diff and is made on purpose: regenerate it with
``python scripts/openapi.py > docs/openapi.json``."""

from __future__ import annotations

import json
from pathlib import Path

from tally.api.openapi import build_openapi

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_checked_in_document_is_the_one_the_server_publishes() -> None:
    published = json.loads(json.dumps(build_openapi()))
    assert json.loads(DOCUMENT.read_text()) == published, (
        "the OpenAPI document changed: review the change, then run"
        " `python scripts/openapi.py > docs/openapi.json`"
    )
