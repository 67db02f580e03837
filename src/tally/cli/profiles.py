"""Where the command line finds the server and the API key to call it with.

``tally login`` saves a profile (a server URL and an API key) in a config file
only its owner can read: ``$TALLY_CONFIG``, else
``$XDG_CONFIG_HOME/tally/config.json``, else ``~/.config/tally/config.json``,
written with mode 0600 in a 0700 directory. A command takes, in order:
``--profile NAME``, then ``TALLY_PROFILE``, then the profile marked default.
``TALLY_URL`` and ``TALLY_API_KEY`` override the profile's values (for CI jobs
and containers, where no file should hold a key).
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tally.client.wire import DEFAULT_BASE_URL

DEFAULT_PROFILE = "default"


class ProfileError(Exception):
    """The config names no usable server or key; the message says what to run."""


@dataclass(frozen=True)
class Profile:
    name: str
    base_url: str
    api_key: str | None


def config_path() -> Path:
    if explicit := os.environ.get("TALLY_CONFIG"):
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "tally" / "config.json"


def load(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    if not path.exists():
        return {"default": None, "profiles": {}}
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ProfileError(
            f"{path} can be read by others (mode {mode:o}); it holds API keys: run chmod 600 {path}"
        )
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("profiles"), dict):
        raise ProfileError(f"{path} is not a Tally config (no 'profiles' object)")
    return data


def save(data: dict[str, Any], path: Path | None = None) -> Path:
    """Write the config atomically, readable by its owner only."""
    path = path or config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.chmod(temporary, 0o600)  # O_CREAT's mode is masked by the umask; this is not
    temporary.replace(path)
    return path


def remember(name: str, base_url: str, api_key: str, *, make_default: bool) -> Path:
    data = load()
    data["profiles"][name] = {"base_url": base_url, "api_key": api_key}
    if make_default or not data.get("default"):
        data["default"] = name
    return save(data)


def forget(name: str) -> bool:
    data = load()
    if data["profiles"].pop(name, None) is None:
        return False
    if data.get("default") == name:
        data["default"] = next(iter(data["profiles"]), None)
    save(data)
    return True


def resolve(name: str | None) -> Profile:
    """The profile a command runs with, environment overrides applied."""
    data = load()
    chosen = name or os.environ.get("TALLY_PROFILE") or data.get("default")
    saved: dict[str, Any] = {}
    if chosen is not None:
        if chosen not in data["profiles"] and name is not None:
            raise ProfileError(f"no profile {chosen!r}: run tally login --profile {chosen}")
        saved = data["profiles"].get(chosen, {})
    base_url = os.environ.get("TALLY_URL") or saved.get("base_url") or DEFAULT_BASE_URL
    api_key = os.environ.get("TALLY_API_KEY") or saved.get("api_key")
    return Profile(chosen or DEFAULT_PROFILE, base_url, api_key)
