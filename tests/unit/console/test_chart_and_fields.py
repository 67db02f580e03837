"""The console's pure parts: the balance chart's SVG and the form fields' limits."""

from __future__ import annotations

import pytest

from tally.console import fields
from tally.console.chart import balance_chart
from tally.console.web import Form
from tally.errors import ValidationFailed


def test_no_history_draws_no_chart() -> None:
    assert balance_chart([], label="x") == ""


def test_the_chart_is_a_step_line_with_its_words_for_screen_readers() -> None:
    svg = balance_chart([(0, 0), (10, 500), (20, -200)], label="Balance of <acc>")
    assert svg.startswith("<svg") and 'role="img"' in svg
    assert "Balance of &lt;acc&gt;" in svg and "<acc>" not in svg
    assert "3 changes, from 0 to -200; lowest -200, highest 500." in svg
    points = svg.split('points="')[1].split('"')[0].split()
    assert len(points) == 2 * 3  # each change steps across, then up or down
    assert "style=" not in svg  # the CSP allows no inline style


def test_a_chart_of_changes_in_one_microsecond_still_spreads_them() -> None:
    svg = balance_chart([(5, 1), (5, 2)], label="same instant")
    assert "nan" not in svg.lower() and "inf" not in svg.lower()


@pytest.mark.parametrize(
    ("raw", "value"), [("1", 1), ("1,250", 1250), ("9_223_372_036_854_775_807", 2**63 - 1)]
)
def test_amounts_are_whole_minor_units(raw: str, value: int) -> None:
    assert fields.amount(Form({"amount": raw})) == value


@pytest.mark.parametrize("raw", ["", "0", "-1", "1.5", "1e3", "9223372036854775808", "²", "\u0661"])
def test_other_amounts_are_refused_naming_the_field(raw: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        fields.amount(Form({"amount": raw}))
    assert refused.value.errors[0].field == "amount"


def test_metadata_lines_are_held_to_the_contracts_limits() -> None:
    assert fields.metadata(Form({"metadata": "a=1\n\n b = two \n"})) == {"a": "1", "b": "two"}
    for bad in ("no-equals", "=v", "k" * 65 + "=v", "k=" + "v" * 513):
        with pytest.raises(ValidationFailed):
            fields.metadata(Form({"metadata": bad}))
    with pytest.raises(ValidationFailed):
        fields.metadata(Form({"metadata": "\n".join(f"k{i}=v" for i in range(51))}))


def test_ids_and_currencies_follow_the_contract() -> None:
    assert fields.optional_id(Form({"id": ""}), "id") is None
    assert fields.required_id(Form({"id": "wallet:ada"}), "id") == "wallet:ada"
    assert fields.currency(Form({"currency": "usd"})) == "USD"
    for bad_id in ("a b", "-x", "x" * 65):
        with pytest.raises(ValidationFailed):
            fields.optional_id(Form({"id": bad_id}), "id")
    for bad_currency in ("", "1USD", "US D", "X" * 17):
        with pytest.raises(ValidationFailed):
            fields.currency(Form({"currency": bad_currency}))
