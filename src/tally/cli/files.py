"""``tally import transfers.csv`` and ``tally export``.

An import must survive being killed and run again: every row becomes exactly
one transfer, however often the command is interrupted, the server restarts or
a connection drops. Three things make it so:

- **A permanent id per row.** A row without an ``id`` column gets
  ``imp_<hash of the file's bytes and the row's line number>``; the server
  answers a second create of an identical transfer with the one it has
  (``exists``), never a second transfer. The same file always gives the same ids.
- **An idempotency key per batch call**, sent on each of its retries, so a batch
  retried after its answer was lost replays the stored answer. A new run makes
  new keys: a key derived from the file would replay an earlier run's answer
  ("created") for rows this run did not create, where the ids answer the truth
  ("exists").
- **A checkpoint** (``<file>.tally-import.json``, beside the file) written after
  each batch's answer: a rerun skips what was confirmed. Losing it costs time,
  never correctness: the ids above still hold.

Every row is checked against the server's own request schema before anything is
sent: a malformed row stops the import with its line number and nothing applied.
Rows the ledger refuses (``exceeds_credits``, …) are reported with their line
numbers; each transfer is applied whole or not at all.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import msgspec
import typer
from rich.console import Console
from rich.progress import Progress

from tally.api.schemas.ledger import TransferCreate
from tally.cli import profiles
from tally.cli.ledger import PROFILE, as_dict, event_row, run
from tally.cli.root import AS_JSON, app, emit
from tally.client import Client

BATCH_ROWS_MAX = 1000  # the API's batch limit
ID_PREFIX = "imp_"
REQUIRED = ("debit_account_id", "credit_account_id", "amount")
INTEGERS = ("amount", "timeout_seconds")


class BadRows(Exception):
    def __init__(self, problems: list[tuple[int, str]]) -> None:
        self.problems = problems
        super().__init__(f"{len(problems)} malformed row(s)")


@dataclass(frozen=True)
class Row:
    line: int
    transfer: TransferCreate


def read_rows(data: bytes, digest: str) -> list[Row]:
    """Every row as the request the server will get, or BadRows naming each
    malformed one by its line number (the header is line 1)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRows([(0, f"the file is not UTF-8: {exc}")]) from exc
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
    if missing:
        raise BadRows([(1, f"the header lacks {', '.join(missing)}")])
    rows, problems = [], []
    for record in reader:
        line = reader.line_num
        try:
            rows.append(Row(line, _transfer(record, digest, line)))
        except (ValueError, msgspec.ValidationError) as exc:
            problems.append((line, str(exc)))
    if problems:
        raise BadRows(problems)
    return rows


def _transfer(record: dict[str | Any, str | Any], digest: str, line: int) -> TransferCreate:
    if None in record:
        raise ValueError("more fields than the header names")
    fields: dict[str, Any] = {}
    metadata: dict[str, str] = {}
    for name, value in record.items():
        if name.startswith("metadata."):
            if value != "":
                metadata[name.removeprefix("metadata.")] = value
        elif value != "":
            fields[name] = _value(name, value)
    fields.setdefault("id", row_id(digest, line))
    return msgspec.convert({**fields, "metadata": metadata}, TransferCreate)


def _value(name: str, value: str) -> Any:
    if name in INTEGERS:
        if not value.strip().isdigit():
            raise ValueError(f"{name}: {value!r} is not a whole number of minor units")
        return int(value)
    if name == "pending":
        if value.lower() not in ("true", "false"):
            raise ValueError(f"pending: {value!r} is not true or false")
        return value.lower() == "true"
    return value


def row_id(digest: str, line: int) -> str:
    return ID_PREFIX + hashlib.sha256(f"{digest}:{line}".encode()).hexdigest()[:32]


def batches(rows: list[Row], size: int) -> Iterator[list[Row]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


class Checkpoint:
    """The last line confirmed for (file contents, server)."""

    def __init__(self, source: Path, digest: str, base_url: str) -> None:
        self.path = source.with_name(source.name + ".tally-import.json")
        self.key = {"digest": digest, "base_url": base_url}

    def done_through(self) -> int:
        try:
            saved = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return 0
        if not isinstance(saved, dict) or saved.get("key") != self.key:
            return 0
        return int(saved.get("line", 0))

    def advance(self, line: int) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps({"key": self.key, "line": line}))
        temporary.replace(self.path)


def send(client: Client, chunk: list[Row]) -> list[tuple[Row, Any]]:
    answer = client.transfers.batch([r.transfer for r in chunk])
    return list(zip(chunk, answer.results, strict=True))


@dataclass
class Tally:
    created: int = 0
    existed: int = 0
    refused: int = 0
    skipped: int = 0


@app.command("import")
def import_transfers(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A CSV file.")],
    batch_size: Annotated[int, typer.Option(min=1, max=BATCH_ROWS_MAX)] = 500,
    restart: Annotated[bool, typer.Option(help="Ignore the checkpoint; send every row.")] = False,
    as_json: Annotated[bool, AS_JSON] = False,
    profile: Annotated[str | None, PROFILE] = None,
) -> None:
    """Create a transfer per CSV row: columns debit_account_id, credit_account_id,
    amount, and optionally id, currency, pending, timeout_seconds, metadata.KEY.
    Safe to interrupt and run again: each row becomes exactly one transfer."""
    data = file.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        rows = read_rows(data, digest)
    except BadRows as bad:
        for line, why in bad.problems:
            emit({"line": line, "error": why}, as_json, f"line {line}: {why}")
        typer.echo(f"{bad}; nothing was imported", err=True)
        raise typer.Exit(1) from bad
    checkpoint = Checkpoint(file, digest, _base_url(profile))
    done = 0 if restart else checkpoint.done_through()
    todo = [r for r in rows if r.line > done]
    counts = Tally(skipped=len(rows) - len(todo))
    run(profile, lambda c: _import(c, todo, batch_size, checkpoint, counts, as_json))
    summary = {"rows": len(rows), **as_dict(counts)}
    emit({"summary": summary}, as_json, _summary_text(summary))
    if counts.refused:
        raise typer.Exit(1)


def _base_url(profile: str | None) -> str:
    try:
        return profiles.resolve(profile).base_url
    except profiles.ProfileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _import(
    client: Client, rows: list[Row], size: int, checkpoint: Checkpoint, counts: Tally,
    as_json: bool,
) -> None:  # fmt: skip
    console = Console(stderr=True)
    with Progress(console=console, transient=True, disable=as_json) as progress:
        task = progress.add_task("importing", total=len(rows))
        for chunk in batches(rows, size):
            for row, result in send(client, chunk):
                if result.status == "created":
                    counts.created += 1
                elif result.status == "exists":
                    counts.existed += 1
                else:
                    counts.refused += 1
                    error = as_dict(result.error)
                    line = f"line {row.line}: {error['code']}: {error['detail']}"
                    emit({"line": row.line, **error}, as_json, line)
            checkpoint.advance(chunk[-1].line)
            progress.advance(task, len(chunk))


def _summary_text(s: dict[str, int]) -> str:
    return (
        f"{s['rows']} rows: {s['created']} created, {s['existed']} already there, "
        f"{s['refused']} refused, {s['skipped']} skipped (done by an earlier run)"
    )


EXPORTABLE = ("accounts", "transfers", "events")


@app.command("export")
def export(
    what: Annotated[str, typer.Argument(help="accounts, transfers or events.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Default: stdout.")] = None,
    format: Annotated[str, typer.Option(help="jsonl or csv.")] = "jsonl",
    profile: Annotated[str | None, PROFILE] = None,
) -> None:
    """Write every account, transfer or event, oldest first, as JSON lines or CSV."""
    if what not in EXPORTABLE:
        raise typer.BadParameter(f"one of {', '.join(EXPORTABLE)}", param_hint="WHAT")
    if format not in ("jsonl", "csv"):
        raise typer.BadParameter("jsonl or csv", param_hint="--format")
    with output.open("w", newline="") if output else _stdout() as out:
        count = run(profile, lambda c: _export(c, what, format, out))
    typer.echo(f"{count} {what} exported", err=True)


def _stdout() -> Any:
    class Unclosed(io.TextIOWrapper):
        def close(self) -> None:
            self.flush()

    return Unclosed(sys.stdout.buffer, encoding="utf-8", newline="")


def _export(client: Client, what: str, format: str, out: Any) -> int:
    items = getattr(client, what).iterate(limit=1000)
    writer: csv.DictWriter[str] | None = None
    count = 0
    for item in items:
        row = event_row(item) if what == "events" else as_dict(item)
        if format == "jsonl":
            out.write(json.dumps(row) + "\n")
        else:
            flat = {k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()}
            if writer is None:
                writer = csv.DictWriter(out, fieldnames=list(flat))
                writer.writeheader()
            writer.writerow(flat)
        count += 1
    return count
