"""docs/fundamentals.md cannot rot: every reference in it resolves, and every
fundamental that issue 17 lists has its section.

The references the map may write, each checked here:

- ``src/tally/ledger/writer.py::Writer`` in a code span: the file exists and
  defines that top-level name (a class, a function or an assigned constant);
  ``::Writer.submit`` (or ``::Writer::submit``) a name in that class's body.
- ``tests/e2e/test_lab.py::test_…``: the file exists and defines that test
  function (top level, or ``::TestClass::test_…``); a parametrized id
  (``::test_…[sqlite]``) names the function before the bracket.
- Any other token of a code span that starts with ``src/``, ``tests/``,
  ``docs/``, ``bench/``, ``scripts/`` or ``deploy/``: that path exists.
- A code span that runs ``make TARGET``: the Makefile has that target.
- A code span that runs ``tally …`` (and a ``$ `` line in a fenced block): the
  words name a command of the real ``tally`` (``tally lab batching``), and every
  ``--option`` given is one that command takes.
- A link ``[text](path#anchor)``: the file exists (relative to the map, as a
  reader's browser resolves it) and, for a Markdown file, the anchor is one of
  its headings (GitHub's slugs); ``(#anchor)`` a heading of the map itself.

A ``file.py::name`` not written from the repository's root is itself a problem.

Each fundamental of issue 17 (``FUNDAMENTALS``) is a heading of the map, and its
section has a ``**Code:**`` item naming code, a ``**Test:**`` item naming a test
function and a ``**Measured:**`` item naming where its figure comes from; an item
for something Tally does not have says "Not built yet" (or "Not measured").

``problems()`` is the checker; the last tests feed it broken references to show
that each kind of break is caught.
"""

from __future__ import annotations

import ast
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import typer.main

from tally.cli import app as tally_app

ROOT = Path(__file__).resolve().parents[2]
MAP = ROOT / "docs" / "fundamentals.md"

# Issue 17's list, one heading each (### level in the map), in the issue's order.
FUNDAMENTALS = (
    "TCP",
    "UDP",
    "QUIC and HTTP/3",
    "TLS",
    "HTTP/1.1",
    "HTTP/2",
    "Event loop vs threads",
    "Processes",
    "C10k",
    "Optimise the wait",
    "Request-response",
    "Short polling",
    "Long polling",
    "Push",
    "Publish-subscribe",
    "Webhooks",
    "Database modelling and normalisation",
    "Indexes",
    "Transactions and isolation",
    "Locks and deadlock avoidance",
    "SQL and key-value stores",
    "Routing and middleware",
    "REST",
    "GraphQL",
    "gRPC",
    "Authentication: passwords, sessions, JWT and API keys",
    "Authorization",
    "The OWASP API Security Top 10",
    "Idempotency",
    "Batching and group commit",
    "Caching and invalidation",
    "Rate limiting",
    "Consistent hashing",
    "Replication and failover",
    "Proxies and load balancing",
    "Containers, Kubernetes and cloud deployment",
    "Observability",
)
# What every fundamental's section holds: where it is done, what proves it, what
# measures it. A part Tally does not have says "Not built yet" (or, for a
# figure, "Not measured") instead of pointing anywhere.
ITEMS = ("**Code:**", "**Test:**", "**Measured:**")
NOT_THERE = ("not built yet", "not measured")

PATH_PREFIXES = ("src/", "tests/", "docs/", "bench/", "scripts/", "deploy/")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
SYMBOL = re.compile(r"^(?P<path>[\w./-]+\.py)::(?P<symbol>[\w.:]+)(?:\[[^\]]*\])?$")
ENV_ASSIGNMENT = re.compile(r"^[A-Z_][A-Z0-9_]*=")
FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass(frozen=True)
class Reference:
    kind: str  # "code" (a code span), "command" (a $ line of a fenced block), "link"
    text: str
    line: int


# -- finding the references ----------------------------------------------------------


def references(text: str) -> Iterator[Reference]:
    """Every code span and link outside fenced blocks, and every ``$ `` line in one."""
    fenced = False
    for number, line in enumerate(text.splitlines(), start=1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            if line.startswith("$ "):
                yield Reference("command", line[2:].strip(), number)
            continue
        for span in CODE_SPAN.findall(line):
            yield Reference("code", span, number)
        for target in LINK.findall(CODE_SPAN.sub(" ", line)):
            yield Reference("link", target, number)


def headings(text: str) -> list[tuple[int, str]]:
    """(level, text) of each heading outside fenced blocks."""
    found, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := HEADING.match(line)):
            found.append((len(m.group(1)), m.group(2)))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text without formatting, lower case, every
    character but letters, digits, '_', '-' and spaces dropped, spaces to '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").replace("*", "").strip().lower()
    kept = "".join(c for c in text if c in "-_ " or unicodedata.category(c)[0] in ("L", "N"))
    return kept.replace(" ", "-")


def anchors(text: str) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for _, heading in headings(text):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


# -- checking each kind ----------------------------------------------------------------


@cache
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _names(body: list[ast.stmt]) -> dict[str, ast.stmt]:
    """The names a module or class body defines, to the statement that does."""
    names: dict[str, ast.stmt] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    names[target.id] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
    return names


def symbol_problem(path_text: str, symbol: str, root: Path = ROOT) -> str | None:
    path = root / path_text
    if not path.is_file():
        return f"{path_text}: no such file"
    parts = re.split(r"::|\.", symbol)
    body = _tree(path).body
    node: ast.stmt | None = None
    for depth, part in enumerate(parts):
        node = _names(body).get(part)
        if node is None:
            where = "::".join([path_text, *parts[:depth]])
            return f"{where}: defines no {part!r}"
        if depth < len(parts) - 1:
            if not isinstance(node, ast.ClassDef):
                return f"{path_text}::{'.'.join(parts[: depth + 1])}: not a class"
            body = node.body
    is_test = path_text.startswith("tests/") and parts[-1].startswith("test_")
    if is_test and not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return f"{path_text}::{symbol}: not a test function"
    return None


def path_problem(path_text: str) -> str | None:
    return None if (ROOT / path_text).exists() else f"{path_text}: no such file or directory"


@cache
def make_targets() -> frozenset[str]:
    text = (ROOT / "Makefile").read_text()
    return frozenset(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.MULTILINE))


def make_problem(words: list[str]) -> str | None:
    targets = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
    missing = [t for t in targets if t not in make_targets()]
    return f"make: no target {missing[0]!r} in the Makefile" if missing else None


def subcommands(command: Any) -> dict[str, Any]:
    """A group's commands by name; {} for a command. (Typer vendors its own click,
    so its groups are not ``click.Group`` instances: read the mapping they keep.)"""
    return dict(getattr(command, "commands", {}))


def tally_problem(words: list[str]) -> str | None:
    """The words after ``tally`` walk the real command tree; options must exist."""
    command = typer.main.get_command(tally_app)
    path = ["tally"]
    for word in words[1:]:
        if word.startswith("-"):
            name = word.split("=", 1)[0]
            options = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
            if name != "--help" and name not in options:
                return f"{' '.join(path)}: no option {name}"
            continue
        if subs := subcommands(command):
            if word not in subs:
                return f"{' '.join(path)}: no command {word!r}"
            command, path = subs[word], [*path, word]
    return None


def command_problems(text: str) -> list[str]:
    """A code span or a ``$`` line: a make or tally run, and any repository paths."""
    words = text.split()
    while words and ENV_ASSIGNMENT.match(words[0]):
        words = words[1:]
    found = []
    if words and words[0] == "make":
        found.append(make_problem(words))
    if words and (words[0] == "tally" or words[0].endswith("/bin/tally")):
        found.append(tally_problem(words))
    for word in words:
        if m := SYMBOL.match(word):
            if m.group("path").startswith(PATH_PREFIXES):
                found.append(symbol_problem(m.group("path"), m.group("symbol")))
            else:
                found.append(f"{word}: write the path from the repository's root")
        elif word.startswith(PATH_PREFIXES):
            found.append(path_problem(word.rstrip(".,;:")))
    return [p for p in found if p is not None]


def link_problem(target: str, doc: Path, text: str) -> str | None:
    """``text`` is the linking document's own: ``(#anchor)`` is one of its headings."""
    if "://" in target or target.startswith("mailto:"):
        return None  # a web address: the map should not need one, docs/ tests say so
    path_text, _, anchor = target.partition("#")
    path = (doc.parent / path_text).resolve() if path_text else doc
    if not path.exists():
        return f"link {target}: no such file"
    if not anchor:
        return None
    if path.suffix != ".md":
        return f"link {target}: an anchor in a file that is not Markdown cannot be checked"
    if anchor not in anchors(path.read_text() if path_text else text):
        return f"link {target}: {path.name} has no heading with the anchor #{anchor}"
    return None


def problems(text: str, doc: Path = MAP) -> list[str]:
    """Every broken reference in a document, as 'line N: what is wrong'."""
    found = []
    for ref in references(text):
        if ref.kind == "link":
            broken = [link_problem(ref.text, doc, text)]
        else:
            broken = list(command_problems(ref.text))
        found += [f"line {ref.line}: {p}" for p in broken if p is not None]
    return found


# -- the sections --------------------------------------------------------------------


def sections(text: str) -> dict[str, str]:
    """Each heading's text to its section: up to the next heading of its level or above."""
    lines = text.splitlines()
    starts: list[tuple[int, int, str]] = []
    fenced = False
    for i, line in enumerate(lines):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced and (m := HEADING.match(line)):
            starts.append((i, len(m.group(1)), m.group(2)))
    found = {}
    for n, (i, level, heading) in enumerate(starts):
        end = next((j for j, lv, _ in starts[n + 1 :] if lv <= level), len(lines))
        found[heading] = "\n".join(lines[i + 1 : end])
    return found


def _names_code(ref: Reference) -> bool:
    """A Python name that is not a test, or a file of deploy/, bench/ or scripts/."""
    if ref.kind != "code":
        return False
    if SYMBOL.match(ref.text):
        return not ref.text.split("::")[-1].startswith("test_")
    return ref.text.startswith(("deploy/", "bench/", "scripts/"))


def _names_a_test(ref: Reference) -> bool:
    return (
        ref.kind == "code"
        and ref.text.startswith("tests/")
        and bool(SYMBOL.match(ref.text))
        and ref.text.split("::")[-1].split("[")[0].startswith("test_")
    )


# What an item must name, when it does not say the thing is not there.
WANTED: dict[str, Callable[[Reference], bool]] = {
    "**Code:**": _names_code,
    "**Test:**": _names_a_test,
    "**Measured:**": lambda ref: True,  # a figure: any checked command, file or link
}


def items(body: str) -> dict[str, str]:
    """Each ``- **Item:**`` of a section to its text, up to the next item."""
    found: dict[str, str] = {}
    current: str | None = None
    for line in body.splitlines():
        if line.startswith("- **"):
            current = next((i for i in ITEMS if line[2:].startswith(i)), None)
            if current is not None:
                found.setdefault(current, "")
        if current is not None and current in found:
            found[current] += line + "\n"
    return found


def section_problems(heading: str, body: str) -> list[str]:
    found = []
    given = items(body)
    for item in ITEMS:
        if item not in given:
            found.append(f"{heading}: no {item} item")
            continue
        said = given[item].lower()
        named = [r for r in references(given[item]) if WANTED[item](r)]
        if not named and not any(w in said for w in NOT_THERE):
            found.append(f"{heading}: {item} names nothing and does not say it is not there")
    return found


# -- the map -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text() -> str:
    return MAP.read_text()


def test_every_reference_in_the_map_resolves(text: str) -> None:
    found = problems(text)
    assert not found, "broken references in docs/fundamentals.md:\n" + "\n".join(found)


def test_the_map_has_references_of_every_kind(text: str) -> None:
    # Checked references only count if the map writes them in the checked form.
    spans = [r.text for r in references(text) if r.kind == "code"]
    assert sum(bool(SYMBOL.match(s)) and s.startswith("src/") for s in spans) >= 40
    assert sum(bool(SYMBOL.match(s)) and s.startswith("tests/") for s in spans) >= 40
    assert any(s.startswith("make ") for s in spans)
    assert any(s.startswith("tally lab ") for s in spans)
    assert sum(r.kind == "link" and "#" in r.text for r in references(text)) >= 10


def test_every_fundamental_of_issue_17_has_a_section(text: str) -> None:
    found = sections(text)
    missing = [f for f in FUNDAMENTALS if f not in found]
    assert not missing, f"no section for: {missing}"
    broken = [p for f in FUNDAMENTALS for p in section_problems(f, found[f])]
    assert not broken, "\n".join(broken)


def test_the_map_quotes_a_table_of_every_tally_lab_command(text: str) -> None:
    labs = subcommands(subcommands(typer.main.get_command(tally_app))["lab"])
    assert len(labs) >= 4
    quoted = {r.text.split()[2] for r in references(text) if r.kind == "command"
              and r.text.startswith("tally lab ")}  # fmt: skip
    assert quoted == set(labs)


def test_the_readme_links_the_map() -> None:
    assert "[docs/fundamentals.md](docs/fundamentals.md)" in (ROOT / "README.md").read_text()


# -- the checker catches what it claims to -------------------------------------------

GOOD = """\
# Map

## Batching and group commit

`src/tally/ledger/writer.py::Writer` and `src/tally/ledger/writer.py::Writer.submit`,
`src/tally/ledger/writer.py::WRITER_BATCH_COMMANDS`, proved by
`tests/e2e/test_lab.py::test_the_batching_writer_commits_far_less_often_than_once_per_transfer`
and `tests/architecture/test_fundamentals.py::test_the_checker_finds_a_broken_reference[x]`;
`make bench-path`, `tally lab batching --transfers 300`,
`.venv/bin/python bench/write_path.py`,
[the writer](architecture.md#one-transaction-for-many-requests),
[above](#batching-and-group-commit).

```
$ tally lab hashing --keys 100
a table
```
"""

BROKEN = [
    ("`src/tally/ledger/no_such_module.py::Writer`", "no such file"),
    ("`src/tally/ledger/writer.py::Writter`", "defines no 'Writter'"),
    ("`src/tally/ledger/writer.py::Writer.no_such_method`", "defines no 'no_such_method'"),
    ("`src/tally/ledger/writer.py::WRITER_BATCH_COMMANDS.x`", "not a class"),
    ("`tests/e2e/test_lab.py::test_that_does_not_exist[sqlite]`", "defines no"),
    ("`tests/e2e/test_lab.py::RUN_SECONDS`", None),  # a constant, not a test: allowed
    ("`tests/e2e/test_lab.py::test_nothing`", "defines no 'test_nothing'"),
    ("`ledger/writer.py::Writer`", "from the repository's root"),
    ("`docs/no-such-doc.md`", "no such file"),
    ("`make no-such-target`", "no target 'no-such-target'"),
    ("`tally lab no-such-lab`", "no command 'no-such-lab'"),
    ("`tally lab batching --no-such-option 3`", "no option --no-such-option"),
    ("[x](no-such-doc.md)", "no such file"),
    ("[x](architecture.md#no-such-heading)", "no heading with the anchor"),
    ("[x](#no-such-heading-here)", "no heading with the anchor"),
    ("[x](../src/tally/ledger/writer.py#L10)", "cannot be checked"),
    ("```\n$ tally lab no-such-lab\n```", "no command 'no-such-lab'"),
]


def test_the_checker_accepts_good_references_of_every_kind() -> None:
    assert problems(GOOD) == []


@pytest.mark.parametrize(("reference", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_the_checker_finds_a_broken_reference(reference: str, expected: str | None) -> None:
    found = problems(f"# Map\n\nSee:\n\n{reference}\n")
    if expected is None:
        assert found == []
    else:
        assert len(found) == 1 and expected in found[0], found


def test_a_test_reference_must_name_a_test_function(tmp_path: Path) -> None:
    module = tmp_path / "tests" / "test_shapes.py"
    module.parent.mkdir()
    module.write_text(
        "test_constant = 1\n"
        "class TestGroup:\n"
        "    async def test_method(self) -> None: ...\n"
        "    test_data = 2\n"
    )
    path = "tests/test_shapes.py"
    assert symbol_problem(path, "TestGroup::test_method", tmp_path) is None
    assert symbol_problem(path, "TestGroup.test_method", tmp_path) is None
    assert "not a test function" in (symbol_problem(path, "test_constant", tmp_path) or "")
    assert "not a test function" in (symbol_problem(path, "TestGroup::test_data", tmp_path) or "")


def test_the_sections_check_finds_a_missing_fundamental_and_an_empty_item() -> None:
    text = (
        "## TCP\n\n- **Code:** `src/tally/cli/server.py::serve`\n- **Test:** nothing\n"
        "## UDP\n\n- **Code:** `tests/e2e/test_lab.py::test_a_double_click_makes_two_"
        "transfers_without_a_key_and_one_with`\n- **Test:** `src/tally/cli/server.py::serve`\n"
        "- **Measured:** Not measured.\n"
    )
    found = sections(text)
    assert "QUIC and HTTP/3" not in found
    assert section_problems("TCP", found["TCP"]) == [
        "TCP: **Test:** names nothing and does not say it is not there",
        "TCP: no **Measured:** item",
    ]
    assert section_problems("UDP", found["UDP"]) == [  # a test as code, code as a test
        "UDP: **Code:** names nothing and does not say it is not there",
        "UDP: **Test:** names nothing and does not say it is not there",
    ]


def test_slugs_are_githubs() -> None:
    assert slug("HTTP/1.1") == "http11"
    assert slug("Authentication: passwords, sessions, JWT and API keys") == (
        "authentication-passwords-sessions-jwt-and-api-keys"
    )
    assert slug("`tally lab` and the *tables*") == "tally-lab-and-the-tables"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n") == {"a", "a-1"}
