"""deploy/nginx/tally.conf.template, read: nginx gives up an idle connection to a
Tally process before the process does (docs/deploy.md, "Behind a load balancer").
tests/e2e/test_load_balancers.py runs the same file in front of real processes."""

from __future__ import annotations

import re
from pathlib import Path

from tally.cli.transport import KEEP_ALIVE_SECONDS

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "tally.conf.template"
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0}


def upstream_keepalive_timeout_seconds(conf: str) -> float:
    """The ``keepalive_timeout`` of the ``upstream`` block; nginx's own default (60 s)
    when it is not set."""
    upstream = re.search(r"upstream\s+\w+\s*\{(.*?)\n\}", conf, re.S)
    assert upstream is not None, "no upstream block"
    setting = re.search(r"^\s*keepalive_timeout\s+(\d+)(ms|s|m)?;", upstream.group(1), re.M)
    if setting is None:
        return 60.0
    return int(setting.group(1)) * UNITS[setting.group(2) or "s"]


def test_nginx_gives_up_an_idle_upstream_connection_before_tally_closes_it() -> None:
    timeout = upstream_keepalive_timeout_seconds(TEMPLATE.read_text())

    # A second of margin: the two clocks start a little apart (Tally's when it
    # wrote the answer, nginx's when it read it), more on a loaded machine.
    assert timeout <= KEEP_ALIVE_SECONDS - 1, (timeout, KEEP_ALIVE_SECONDS)


def test_an_upstream_without_the_setting_is_read_as_nginxs_default() -> None:
    conf = "upstream tally {\n    server 127.0.0.1:8000;\n    keepalive 64;\n}\n"

    assert upstream_keepalive_timeout_seconds(conf) == 60.0
    shorter = conf.replace("64;", "64;\n    keepalive_timeout 1500ms;")
    assert upstream_keepalive_timeout_seconds(shorter) == 1.5
