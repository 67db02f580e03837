"""Reading the console's form fields into the plain values the ledger's commands
take, with the contract's limits (api.md §2) from the core's own constants, and
refusals that name the field in words."""

from __future__ import annotations

import re

from tally.console.web import Form
from tally.core.model import (
    AMOUNT_MAX,
    METADATA_KEY_CHARS_MAX,
    METADATA_KEYS_MAX,
    METADATA_VALUE_CHARS_MAX,
    TIMEOUT_SECONDS_MAX,
)
from tally.errors import FieldError, ValidationFailed
from tally.support.ids import is_valid_id

# The contract's currency code (the REST schema publishes the same pattern).
_CURRENCY = re.compile(r"[A-Z][A-Z0-9_]{0,15}")
_INTEGER = re.compile(r"[0-9]{1,19}")


def refuse(name: str, message: str) -> ValidationFailed:
    return ValidationFailed([FieldError(name, "invalid", message)])


def optional_id(form: Form, name: str) -> str | None:
    value = form.text(name)
    if not value:
        return None
    if not is_valid_id(value):
        raise refuse(
            name,
            "An id is 1-64 letters, digits and . _ : - and starts with a letter or digit.",
        )
    return value


def required_id(form: Form, name: str) -> str:
    value = optional_id(form, name)
    if value is None:
        raise refuse(name, "Required.")
    return value


def currency(form: Form, name: str = "currency") -> str:
    value = form.text(name).upper()
    if not _CURRENCY.fullmatch(value):
        raise refuse(name, "A currency code: a letter, then up to 15 letters, digits or _.")
    return value


def optional_integer(form: Form, name: str, low: int, high: int) -> int | None:
    value = form.text(name).replace(",", "").replace("_", "")
    if not value:
        return None
    if not _INTEGER.fullmatch(value) or not low <= int(value) <= high:
        raise refuse(name, f"A whole number from {low:,} to {high:,}.")
    return int(value)


def amount(form: Form, name: str = "amount") -> int:
    value = optional_integer(form, name, 1, AMOUNT_MAX)
    if value is None:
        raise refuse(name, "Required: a whole number of minor units (cents).")
    return value


def optional_amount(form: Form, name: str = "amount") -> int | None:
    return optional_integer(form, name, 1, AMOUNT_MAX)


def timeout_seconds(form: Form, name: str = "timeout_seconds") -> int | None:
    return optional_integer(form, name, 1, TIMEOUT_SECONDS_MAX)


def metadata(form: Form, name: str = "metadata") -> dict[str, str]:
    """``key=value``, one a line."""
    found: dict[str, str] = {}
    for line in form.raw(name).splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not 1 <= len(key) <= METADATA_KEY_CHARS_MAX:
            raise refuse(name, f"Each line is key=value, the key 1-{METADATA_KEY_CHARS_MAX} long.")
        if len(value) > METADATA_VALUE_CHARS_MAX:
            raise refuse(name, f"A value is at most {METADATA_VALUE_CHARS_MAX} characters.")
        found[key] = value
    if len(found) > METADATA_KEYS_MAX:
        raise refuse(name, f"At most {METADATA_KEYS_MAX} keys.")
    return found


def choice(form: Form, name: str, choices: tuple[str, ...]) -> str:
    value = form.text(name, choices[0])
    if value not in choices:
        raise refuse(name, f"One of {', '.join(choices)}.")
    return value
