"""deploy/grafana and deploy/prometheus: well-formed, and about metrics Tally has.

A dashboard or an alert on a metric that was renamed stays silent forever; so
every ``tally_*`` series they name must be one this Tally exports (read from the
metrics registry, where the code declares them). The alert rules also go
through Prometheus's own ``promtool``: ``check rules`` (PromQL and templates
parse) and ``test rules`` (they fire on synthetic series, and not on healthy ones).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml

import tally.api.endpoint
import tally.audit.appender
import tally.ledger.writer  # noqa: F401  (each declares its metrics)

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "tally-dashboard.json"
RULES = ROOT / "deploy" / "prometheus" / "tally-alerts.yaml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tally-alerts.test.yaml"
SERIES = re.compile(r"\btally_[a-z_]+")
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_sum", "_count"),
    "gauge": ("",),
}


def exported_series() -> set[str]:
    names = set()
    for family in prometheus_client.REGISTRY.collect():
        if family.name.startswith("tally_"):
            names |= {family.name + s for s in SUFFIXES.get(family.type, ("",))}
    return names


def dashboard_queries() -> list[str]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def rule_queries() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def test_the_dashboard_is_grafana_json_with_unique_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_series_named_is_one_tally_exports(source: str) -> None:
    queries = dashboard_queries() if source == "dashboard" else rule_queries()
    named = {name for q in queries for name in SERIES.findall(q)}
    assert named, source
    unknown = named - exported_series()
    assert not unknown, f"{source} names series Tally does not export: {unknown}"


def test_every_alert_says_how_bad_and_what_to_do() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    for rule in (r for g in groups for r in g["rules"]):
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert {"summary", "description"} <= rule["annotations"].keys(), rule["alert"]


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("TALLY_TEST_SKIP_PROXIES") == "1":
            pytest.skip("promtool is not installed (TALLY_TEST_SKIP_PROXIES=1)")
        pytest.fail(
            "promtool is not installed: `apt-get install --no-install-recommends prometheus` "
            "(.ci/run does)",
            pytrace=False,
        )
    return path


@pytest.mark.parametrize("command", [["check", "rules", RULES], ["test", "rules", RULE_TESTS]])
def test_promtool_accepts_the_rules_and_their_tests(command: list[Any]) -> None:
    done = subprocess.run(
        [promtool(), *map(str, command)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
