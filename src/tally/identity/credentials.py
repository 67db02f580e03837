"""What authentication reads, kept per process and dropped the moment it changes.

Every request names an API key or a session, and reading it from the database
was a round trip per request, most of a request's cost (docs/performance.md).
This cache keeps what was read, under three rules that keep revocation
immediate in every process:

- Every change that could turn a cached answer from yes to no (a key revoked, a
  session ended, a user's role, status or password changed) sends a message on
  ``CHANNEL`` in the same transaction (``Tx.notify``): ``key:<id>``,
  ``session:<id>`` or ``user:<id>``. Every process's listener drops the entry.
  The sender's own transaction returns only once its message is back, so the
  response to "revoke" leaves after every process has been told.
- While the listener is down, the cache answers nothing; when it is back (it
  listens first), everything is dropped (``reset``).
- A read that was in flight when a message arrived is not stored
  (``generation``), and every entry ages out after ``ttl_seconds`` anyway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tally.storage.notifications import Notifications

CHANNEL = "tally_credentials"
ENTRIES_MAX = 10_000


def key_message(key_id: str) -> str:
    return f"key:{key_id}"


def session_message(session_id: str) -> str:
    return f"session:{session_id}"


def user_message(user_id: str) -> str:
    return f"user:{user_id}"


class CredentialCache:
    def __init__(
        self,
        notifications: Notifications,
        *,
        ttl_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._notifications = notifications
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        # "key:<id>" or "session:<id>" -> (expires at, owning user id or "", value)
        self._entries: dict[str, tuple[float, str, Any]] = {}
        self.generation = 0
        if ttl_seconds > 0:
            notifications.subscribe(CHANNEL, self.on_message, self.reset)

    @property
    def enabled(self) -> bool:
        return self._ttl > 0 and self._notifications.listening

    def get(self, name: str) -> Any:
        """The cached value, or None."""
        if not self.enabled:
            return None
        entry = self._entries.get(name)
        if entry is None:
            return None
        if entry[0] <= self._monotonic():
            del self._entries[name]
            return None
        return entry[2]

    def put(self, name: str, value: Any, *, user_id: str, read_in: int) -> None:
        """Keep ``value``, read while ``generation`` was ``read_in``."""
        if not self.enabled or read_in != self.generation:
            return  # a message arrived while it was read: it may be stale already
        if len(self._entries) >= ENTRIES_MAX:
            self._entries.clear()
        self._entries[name] = (self._monotonic() + self._ttl, user_id, value)

    def on_message(self, message: str) -> None:
        self.generation += 1
        kind, _, ident = message.partition(":")
        if kind == "user":
            for name in [n for n, e in self._entries.items() if e[1] == ident]:
                del self._entries[name]
        else:
            self._entries.pop(message, None)

    def reset(self) -> None:
        self.generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
