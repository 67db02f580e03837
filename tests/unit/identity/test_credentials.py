"""The per-process credential cache's rules (identity.credentials)."""

from __future__ import annotations

from tally.identity.credentials import CredentialCache, key_message, session_message
from tally.storage.notifications import Notifications, stamp, unstamp


class Listening(Notifications):
    def __init__(self) -> None:
        self.listening = True
        self.subscribed: list[str] = []

    def subscribe(self, channel: str, on_message: object, on_reset: object) -> None:
        self.subscribed.append(channel)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def cache(ttl: float = 30.0) -> tuple[CredentialCache, Listening, Clock]:
    notifications, clock = Listening(), Clock()
    return CredentialCache(notifications, ttl_seconds=ttl, monotonic=clock), notifications, clock


def test_it_keeps_what_was_read_until_its_time_is_up() -> None:
    c, notifications, clock = cache()
    assert notifications.subscribed == ["tally_credentials"]
    c.put(key_message("k1"), "record", user_id="", read_in=c.generation)
    assert c.get(key_message("k1")) == "record"
    clock.now += 30.0
    assert c.get(key_message("k1")) is None


def test_a_message_drops_the_entry_it_names_and_only_that() -> None:
    c, _, _ = cache()
    c.put(key_message("k1"), "one", user_id="", read_in=c.generation)
    c.put(key_message("k2"), "two", user_id="", read_in=c.generation)
    c.on_message(key_message("k1"))
    assert c.get(key_message("k1")) is None
    assert c.get(key_message("k2")) == "two"


def test_a_user_message_drops_every_session_of_that_user() -> None:
    c, _, _ = cache()
    for session, user in (("s1", "u1"), ("s2", "u1"), ("s3", "u2")):
        c.put(session_message(session), session, user_id=user, read_in=c.generation)
    c.on_message("user:u1")
    assert [c.get(session_message(s)) for s in ("s1", "s2", "s3")] == [None, None, "s3"]


def test_a_read_that_crossed_a_message_is_not_kept() -> None:
    c, _, _ = cache()
    read_in = c.generation
    c.on_message(key_message("k1"))  # arrives while the read is in flight
    c.put(key_message("k1"), "stale", user_id="", read_in=read_in)
    assert c.get(key_message("k1")) is None


def test_nothing_is_answered_while_the_listener_is_down_and_all_goes_on_reset() -> None:
    c, notifications, _ = cache()
    c.put(key_message("k1"), "one", user_id="", read_in=c.generation)
    notifications.listening = False
    assert c.get(key_message("k1")) is None
    notifications.listening = True
    c.reset()
    assert c.get(key_message("k1")) is None
    assert len(c) == 0


def test_a_zero_time_to_live_turns_it_off() -> None:
    c, notifications, _ = cache(ttl=0)
    assert notifications.subscribed == []
    c.put(key_message("k1"), "one", user_id="", read_in=c.generation)
    assert c.get(key_message("k1")) is None


def test_a_stamped_message_reads_back_as_itself() -> None:
    assert unstamp(stamp("key:tly_abc")) == "key:tly_abc"
    assert stamp("key:a") != stamp("key:a")
