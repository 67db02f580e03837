"""The webhook settings that must fit together."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from tally.config import Settings


def test_a_ttl_shorter_than_two_heartbeats_is_refused() -> None:
    with pytest.raises(ValidationError, match="at least twice"):
        Settings(webhooks_worker_ttl_seconds=3, webhooks_heartbeat_seconds=2)
    assert Settings(webhooks_worker_ttl_seconds=4, webhooks_heartbeat_seconds=2)


def test_the_defaults_deliver_with_https_only_and_retry_for_about_a_day() -> None:
    # The defaults as declared (tests/conftest.py turns delivery off in this process).
    defaults = {name: f.default for name, f in Settings.model_fields.items()}
    assert defaults["webhooks_deliver"] is True
    assert defaults["webhooks_allow_loopback"] is False
    assert defaults["webhooks_attempts_max"] == 14
