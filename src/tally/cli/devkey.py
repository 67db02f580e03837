"""`make run`'s helper: print a working API key for the local database.

The key is kept in ``.tally/dev-key.json`` (git-ignored) so that each `make run`
shows the same key; if the database no longer knows it (the file was deleted,
say), a new "dev" tenant and key are made. For development only: production
keys come from ``tally tenants create``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tally.cli.admin import new_tenant, with_store
from tally.config import get_settings
from tally.errors import Unauthenticated
from tally.identity.authentication import Authenticator
from tally.storage import Store

KEY_FILE = Path(".tally/dev-key.json")


async def _still_valid(api_key: str) -> bool:
    async def check(store: Store) -> bool:
        try:
            await Authenticator(store, None).authenticate(f"Bearer {api_key}")
        except Unauthenticated:
            return False
        return True

    return await with_store(get_settings(), check)


def main() -> None:
    settings = get_settings()
    saved = json.loads(KEY_FILE.read_text()) if KEY_FILE.exists() else {}
    key = saved.get(settings.database_url)
    if key is None or not asyncio.run(_still_valid(key)):
        _, key = asyncio.run(new_tenant(settings, "dev"))
        saved[settings.database_url] = key
        KEY_FILE.parent.mkdir(exist_ok=True)
        KEY_FILE.write_text(json.dumps(saved, indent=2))
        KEY_FILE.chmod(0o600)
    print(f"API key for {settings.database_url}: {key}")


if __name__ == "__main__":
    main()
