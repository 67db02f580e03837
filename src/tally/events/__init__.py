"""Live events: one hub per process that follows each tenant's events table and
fans new events out to its streams and long polls (``hub``), woken across
processes by PostgreSQL ``NOTIFY`` or Redis pub/sub (``redis``)."""

from tally.events.hub import EventHub, SharedEvent, Subscriber, event_json, parse_wakeup

__all__ = ["EventHub", "SharedEvent", "Subscriber", "event_json", "parse_wakeup"]
