"""The console's pages: Jinja2 templates (``templates/``), HTML-escaped by default,
and the helpers they use to show money, times and JSON."""

from __future__ import annotations

import json
from typing import Any

import jinja2

from tally.support.clock import format_time

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("tally.console", "templates"),
    autoescape=True,  # every value is escaped, whatever the template
    undefined=jinja2.StrictUndefined,  # a misspelt name is a bug, found by the tests
    trim_blocks=True,
    lstrip_blocks=True,
)


def amount(value: int) -> str:
    """Minor units with thousands separators (money is never a float here)."""
    return f"{value:,}"


def when(us: int | None) -> str:
    return "" if us is None else format_time(us).replace("T", " ").removesuffix("Z") + " UTC"


def pretty_json(text: str) -> str:
    return json.dumps(json.loads(text), indent=2, sort_keys=True)


_env.filters.update(amount=amount, when=when, pretty_json=pretty_json)


def render(template: str, **context: Any) -> str:
    return _env.get_template(template).render(**context)
