"""Print the OpenAPI document the server publishes: ``python scripts/openapi.py >
docs/openapi.json`` (tests/api/test_openapi_document.py holds the two equal)."""

from __future__ import annotations

import json
import sys

from tally.api.openapi import build_openapi

json.dump(build_openapi(), sys.stdout, indent=2, ensure_ascii=False)
sys.stdout.write("\n")
