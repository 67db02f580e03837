"""Lab: which keys move when a worker joins, under modulo and under rendezvous
hashing (``tally.webhooks.ring``, how webhook endpoints are spread over server
processes).

With ``hash(key) % n``, going from n to n+1 workers moves almost every key
(n/(n+1) of them), so almost every endpoint changes worker at once. With
rendezvous hashing, only the keys the new worker now scores highest on move,
about 1/(n+1), and all of them to the new worker: the others keep their worker,
and with it the order of their deliveries.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from tally.lab import tables
from tally.webhooks import ring


@dataclass(frozen=True)
class Moved:
    scheme: str
    keys: int
    workers_before: int
    moved: int
    moved_to_new_worker: int

    @property
    def share(self) -> float:
        return self.moved / self.keys


def _modulo_owner(key: str, workers: list[str]) -> str:
    digest = hashlib.sha256(key.encode()).digest()
    return workers[int.from_bytes(digest[:8], "big") % len(workers)]


def _moved(scheme: str, keys: list[str], before: list[str], after: list[str]) -> Moved:
    owner = ring.owner if scheme == "rendezvous (Tally)" else _modulo_owner
    moved = to_new = 0
    for key in keys:
        was, now = owner(key, before), owner(key, after)
        if was != now:
            moved += 1
            to_new += now == after[-1]
    return Moved(scheme, len(keys), len(before), moved, to_new)


def join(keys_n: int, workers_n: int) -> list[Moved]:
    """Keys ``whe_0`` … on ``workers_n`` workers, then one more joins."""
    keys = [f"whe_{i}" for i in range(keys_n)]
    before = [f"worker-{i}" for i in range(workers_n)]
    after = [*before, f"worker-{workers_n}"]
    return [_moved(s, keys, before, after) for s in ("modulo", "rendezvous (Tally)")]


def table(results: list[Moved]) -> str:
    headers = ["scheme", "keys", "workers", "moved when one joins", "share moved"]
    headers += ["moved to the new worker"]
    rows = [
        [r.scheme, r.keys, f"{r.workers_before} -> {r.workers_before + 1}", r.moved,
         f"{r.share:.1%}", r.moved_to_new_worker]
        for r in results
    ]  # fmt: skip
    return tables.render(headers, rows)
