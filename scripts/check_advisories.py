"""Known vulnerabilities in the installed dependencies, and what was audited.

Two sources, each over every installed distribution (Tally itself and pip's own
tooling aside):

1. ``pip-audit`` (OSV, through PyPI's per-release JSON). On this project's build
   machines PyPI is reached through a mirror that serves each project's JSON but
   not the per-release JSON pip-audit asks for, and OSV is out of reach, so
   pip-audit skips every package ("could not be audited") and still prints "No
   known vulnerabilities found". Run here in JSON mode, it is counted for what it
   did: which packages it audited, which it skipped.
2. **PyPI's advisories** (``/pypi/<name>/json``, whose ``vulnerabilities`` list is
   about the newest release). A fresh install takes the newest releases, so for
   each installed distribution that is the newest release this reads the
   advisories PyPI lists, and fails on any that names the installed version. One
   that is not the newest release, or whose data cannot be fetched, is not audited
   by this source.

The last lines say plainly how many packages each source audited, which packages
neither could audit, and how many known vulnerabilities were found. Exit 1 on any
known vulnerability; ``--strict`` also on a package neither source audited.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from importlib import metadata

PYPI = "https://pypi.org/pypi/{name}/json"
TIMEOUT_SECONDS = 20
PIP_AUDIT_TIMEOUT_SECONDS = 600
SKIP = {"tally", "pip", "setuptools", "wheel"}


@dataclass
class Source:
    name: str
    audited: set[str] = field(default_factory=set)
    vulnerable: list[str] = field(default_factory=list)
    problem: str = ""  # why it could not run at all


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, str]:
    """canonical name -> version, of every distribution this audit covers."""
    found = {canonical(d.metadata["Name"]): d.version for d in metadata.distributions()}
    return {name: version for name, version in sorted(found.items()) if name not in SKIP}


def pip_audit(packages: dict[str, str]) -> Source:
    source = Source("pip-audit (OSV data, through PyPI's per-release JSON)")
    command = [sys.executable, "-m", "pip_audit", "--progress-spinner", "off", "-f", "json"]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_AUDIT_TIMEOUT_SECONDS, check=False
        )
        report = json.loads(done.stdout)
    except (OSError, subprocess.TimeoutExpired, ValueError) as exc:
        source.problem = f"it did not run to the end ({type(exc).__name__})"
        return source
    reasons: dict[str, int] = {}
    for dependency in report.get("dependencies", []):
        name = canonical(dependency.get("name", ""))
        if name not in packages:
            continue
        if "skip_reason" in dependency:
            # "Dependency not found on PyPI and could not be audited: x (1.0)"
            reason = str(dependency["skip_reason"]).split(":", 1)[0]
            reasons[reason] = reasons.get(reason, 0) + 1
            continue
        source.audited.add(name)
        for vuln in dependency.get("vulns") or []:
            source.vulnerable.append(f"{name} {packages[name]}: {vuln.get('id')}")
    if reasons:
        source.problem = "it said: " + "; ".join(f"{r} ({n}x)" for r, n in reasons.items())
    return source


def _project(name: str) -> dict[str, object] | None:
    try:
        url = PYPI.format(name=name)  # a constant https address, never user input
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as r:
            data: dict[str, object] = json.load(r)
            return data
    except (OSError, ValueError):
        return None


def pypi_advisories(packages: dict[str, str]) -> Source:
    source = Source("PyPI's advisories for the newest releases")
    for name, version in packages.items():
        data = _project(name)
        info = data.get("info") if data else None
        if not isinstance(info, dict) or info.get("version") != version:
            continue
        source.audited.add(name)
        for vuln in data.get("vulnerabilities") or []:  # type: ignore[union-attr]
            if not vuln.get("withdrawn"):
                summary = vuln.get("summary") or ""
                source.vulnerable.append(f"{name} {version}: {vuln.get('id')} {summary}")
    return source


def report(packages: dict[str, str], sources: list[Source]) -> tuple[int, list[str]]:
    """Print the summary; return the number of vulnerabilities and the unaudited."""
    vulnerable = sorted({line for s in sources for line in s.vulnerable})
    for line in vulnerable:
        print(f"VULNERABLE {line}")
    print(
        f"Dependency audit of {len(packages)} installed packages ({', '.join(sorted(SKIP))} aside):"
    )
    for s in sources:
        skipped = len(packages) - len(s.audited)
        why = f"; {s.problem}" if s.problem else ""
        print(f"  {s.name}: audited {len(s.audited)}, could not audit {skipped}{why}")
    covered = set().union(*(s.audited for s in sources))
    neither = [f"{name} {packages[name]}" for name in packages if name not in covered]
    print(f"  audited by at least one source: {len(covered)} of {len(packages)}")
    if neither:
        print(f"  NOT AUDITED by either source: {', '.join(neither)}")
    print(f"  known vulnerabilities found: {len(vulnerable)}")
    return len(vulnerable), neither


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--strict", action="store_true", help="fail on a package neither source audited"
    )
    args = parser.parse_args()
    packages = installed()
    found, neither = report(packages, [pip_audit(packages), pypi_advisories(packages)])
    return 1 if found or (args.strict and neither) else 0


if __name__ == "__main__":
    sys.exit(main())
