"""Rendezvous hashing: a worker joining or leaving moves only its share."""

from __future__ import annotations

from tally.webhooks.ring import owner, share

ENDPOINTS = [f"whe_{i:05d}" for i in range(4000)]


def owners(workers: list[str]) -> dict[str, str]:
    return {e: owner(e, workers) for e in ENDPOINTS}


def test_every_endpoint_has_exactly_one_owner_and_shares_are_even() -> None:
    workers = ["w1", "w2", "w3"]
    shares = [share(ENDPOINTS, workers, w) for w in workers]
    assert sorted(e for s in shares for e in s) == sorted(ENDPOINTS)
    for s in shares:
        assert abs(len(s) - len(ENDPOINTS) / 3) < len(ENDPOINTS) * 0.05


def test_a_fourth_worker_takes_about_a_quarter_all_moved_to_it() -> None:
    before = owners(["w1", "w2", "w3"])
    after = owners(["w1", "w2", "w3", "w4"])
    moved = [e for e in ENDPOINTS if before[e] != after[e]]
    assert all(after[e] == "w4" for e in moved)
    assert abs(len(moved) / len(ENDPOINTS) - 0.25) < 0.03


def test_a_worker_leaving_moves_only_its_own_endpoints() -> None:
    before = owners(["w1", "w2", "w3", "w4"])
    after = owners(["w1", "w2", "w4"])
    moved = [e for e in ENDPOINTS if before[e] != after[e]]
    assert {before[e] for e in moved} == {"w3"}
    assert len(moved) == sum(1 for o in before.values() if o == "w3")


def test_the_answer_does_not_depend_on_the_order_of_the_list() -> None:
    assert owners(["w1", "w2", "w3"]) == owners(["w3", "w1", "w2"])
