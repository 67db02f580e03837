"""The web console at ``/console``: pages for people, beside the REST API.

An entry point like ``tally.api``: it parses a form, calls the same ``Services``
(``ledger``, ``identity``, ``audit_log``, with the same scopes, rate limits and
audit rows), and renders HTML. ``routes`` is its one route table; ``web`` what
runs around every page (session cookie, CSRF, origin, scope, errors, audit);
``ledger_pages`` and ``admin_pages`` the pages; ``chart`` the balance chart;
``templates/`` and ``static/`` what a browser gets. docs/console.md.
"""

from tally.console.routes import CONSOLE_ROUTES, console_routes

__all__ = ["CONSOLE_ROUTES", "console_routes"]
