"""Values written into SQL text as constants: the one place Tally does it.

Every statement Tally sends carries its values as bound parameters (the
extended query protocol), except one: the writer's last write statement of a
small batch, which travels in the same simple-query message as the batch's
``COMMIT`` so that the two cost one round trip, not two (``PostgresStore``,
decisions/0010). The simple query protocol has no parameters, so that
statement is ``EXECUTE name(constant, ...)`` of a statement prepared with
parameters, and its values are written here as constants:

- an ``int`` as its decimal digits (``bool`` is refused: it is an ``int`` that
  means something else);
- a ``str`` as an escape string constant, ``E'...'``, in which a backslash
  starts an escape and a quote ends the constant: both are doubled, so neither
  can do either. An ``E'...'`` constant reads the same whatever the session's
  ``standard_conforming_strings``, on which a plain ``'...'`` depends. A NUL
  character is refused: the protocol's message is NUL-terminated, and
  PostgreSQL stores no NUL in text anyway.

Nothing else is accepted, so nothing else can reach SQL text by this path:
no identifiers, no SQL fragments, no other types. ``tests/integration/storage/
test_literals.py`` sends arbitrary strings through it to PostgreSQL and reads
them back unchanged.
"""

from __future__ import annotations


def literal(value: str | int) -> str:
    """``value`` as an SQL constant (see the module's docstring)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError("a NUL character cannot be written into SQL text")
        return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(int(value))  # int(): an int subclass's own __str__ is not trusted
    raise TypeError(f"no SQL constant for a {type(value).__name__}")


__all__ = ["literal"]
