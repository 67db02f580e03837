"""One switch for the size of every randomised and load test: ``TALLY_SOAK=1``.

CI runs each property, fuzz and race test at a size that keeps the whole suite
within its time budget on a two-core machine; the soak run (``TALLY_SOAK=1``) runs
the same tests, unchanged in what they assert, for many more examples, steps and
rounds. A test picks its size with ``scaled(ci, soak)``, so the two figures sit side
by side where the test declares them.
"""

from __future__ import annotations

import os

SOAK = os.environ.get("TALLY_SOAK") == "1"


def scaled(ci: int, soak: int) -> int:
    """The CI figure, or the soak figure when ``TALLY_SOAK=1``."""
    return soak if SOAK else ci
