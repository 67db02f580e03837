"""Rate limits: token buckets per credential, per address and per login, shared
through Redis when it is configured (``buckets``), and the policies of which
request spends which bucket (``policies``)."""

from tally.limits.buckets import Limiter, Policy, Take
from tally.limits.policies import Limits

__all__ = ["Limiter", "Limits", "Policy", "Take"]
