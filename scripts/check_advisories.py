"""Known vulnerabilities in the installed dependencies, from PyPI's advisory data.

CI runs ``pip-audit`` first. On this project's build machines PyPI is reached
through a mirror that serves each project's JSON (``/pypi/<name>/json``, whose
``vulnerabilities`` list is about the newest release) but not the per-release
JSON that pip-audit asks for, and OSV is out of reach; pip-audit then skips
every package ("not found on PyPI"), which would be a silent pass. This script
closes that gap: a fresh install takes the newest releases, so for each installed
distribution that is the newest release it reads the advisories PyPI lists, and
fails on any that names the installed version. A distribution that is not the
newest release, or whose data cannot be fetched, is listed as not audited, and
``--strict`` makes that a failure too.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from importlib import metadata

PYPI = "https://pypi.org/pypi/{name}/json"
TIMEOUT_SECONDS = 20
SKIP = {"tally", "pip", "setuptools", "wheel"}


def _project(name: str) -> dict[str, object] | None:
    try:
        url = PYPI.format(name=name)  # a constant https address, never user input
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as r:
            data: dict[str, object] = json.load(r)
            return data
    except (OSError, ValueError):
        return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strict", action="store_true", help="fail on unaudited packages")
    args = parser.parse_args()
    found, unaudited, audited = [], [], 0
    for dist in sorted(metadata.distributions(), key=lambda d: d.metadata["Name"].lower()):
        name, version = dist.metadata["Name"], dist.version
        if name.lower() in SKIP:
            continue
        data = _project(name)
        info = data.get("info") if data else None
        if not isinstance(info, dict) or info.get("version") != version:
            unaudited.append(f"{name} {version}")
            continue
        audited += 1
        for vuln in data.get("vulnerabilities") or []:  # type: ignore[union-attr]
            if not vuln.get("withdrawn"):
                found.append(f"{name} {version}: {vuln.get('id')} {vuln.get('summary') or ''}")
    for line in found:
        print(f"VULNERABLE {line}")
    for line in unaudited:
        print(f"not audited (not the newest release, or no data): {line}")
    print(
        f"{audited} packages audited, {len(found)} known vulnerabilities,"
        f" {len(unaudited)} not audited"
    )
    return 1 if found or (args.strict and unaudited) else 0


if __name__ == "__main__":
    sys.exit(main())
