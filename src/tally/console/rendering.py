"""The console's pages: Jinja2 templates (``templates/``), HTML-escaped by default,
and the helpers they use to show money, times and JSON.

Jinja2 is imported on the first page rendered, not with the server: a process
that never serves the console (one holding ten thousand event streams, say:
docs/events.md) does not carry it.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from tally.support.clock import format_time

if TYPE_CHECKING:
    import jinja2


def amount(value: int) -> str:
    """Minor units with thousands separators (money is never a float here)."""
    return f"{value:,}"


def when(us: int | None) -> str:
    return "" if us is None else format_time(us).replace("T", " ").removesuffix("Z") + " UTC"


def pretty_json(text: str) -> str:
    return json.dumps(json.loads(text), indent=2, sort_keys=True)


@functools.cache
def _environment() -> jinja2.Environment:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("tally.console", "templates"),
        autoescape=True,  # every value is escaped, whatever the template
        undefined=jinja2.StrictUndefined,  # a misspelt name is a bug, found by the tests
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(amount=amount, when=when, pretty_json=pretty_json)
    return env


def render(template: str, **context: Any) -> str:
    return _environment().get_template(template).render(**context)
