"""Folded stacks (``py-spy record --format raw``) into a flame graph and two tables.

    .venv/bin/python bench/harness/flame.py PROFILE.txt --svg OUT.svg \\
        [--cpu-us-per-transfer 540] [--top 25]

Each input line is ``frame;frame;...;frame COUNT``, outermost first, a frame being
``function (file:line)``. Functions are counted without their line numbers (one
row per function, not per line). **Self** samples are those where the function is
the innermost frame: where the CPU was spent; **total** samples are those where it
is anywhere on the stack, counted once per stack even when it recurses. Given the
CPU µs per transfer of the profiled run, each share is also shown in µs per
transfer (a sample's share of all samples times that figure), which is how a
lever's saving is predicted before it is built.

The SVG is written by this module (no dependency): one rectangle per frame, width
proportional to samples, outermost at the bottom; hover for the full name and
counts. Frames are merged by function and file, not line.
"""

from __future__ import annotations

import argparse
import html
import re
import sys
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_LINE_NUMBER = re.compile(r":\d+\)$")
SVG_WIDTH_PX = 1600
FRAME_HEIGHT_PX = 17
FONT_PX = 11
CHAR_WIDTH_PX = 6.2  # roughly, at FONT_PX in a sans-serif font
MIN_WIDTH_PX = 0.3  # narrower frames are left out of the picture (not of the tables)


def frame_name(frame: str) -> str:
    """``handle (tally/api/endpoint.py:120)`` -> ``handle (tally/api/endpoint.py)``."""
    return _LINE_NUMBER.sub(")", frame.strip())


def short_path(frame: str) -> str:
    """Drop the site-packages / checkout prefix, so the tables stay narrow."""
    for marker in ("site-packages/", "/src/", "lib/python3."):
        index = frame.find(marker)
        if index != -1:
            head = frame[: frame.find("(") + 1]
            tail = frame[index + len(marker) :]
            if marker == "lib/python3.":
                tail = "stdlib/" + tail.split("/", 1)[-1]
            return head + tail
    return frame


def parse(text: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [short_path(frame_name(f)) for f in stack.split(";") if f]
        stacks.append((frames, int(count)))
    return stacks


def self_and_total(stacks: list[tuple[list[str], int]]) -> tuple[Counter[str], Counter[str]]:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for frames, count in stacks:
        if not frames:
            continue
        own[frames[-1]] += count
        for name in set(frames):
            total[name] += count
    return own, total


def top_table(
    counts: Counter[str], samples: int, title: str, top: int, cpu_us: float | None
) -> str:
    header = f"{title} (of {samples:,} samples)"
    unit = "  µs/transfer" if cpu_us else ""
    lines = [header, f"{'samples':>8}  {'share':>6}{unit}  function"]
    for name, n in counts.most_common(top):
        share = n / samples if samples else 0.0
        us = f"  {share * cpu_us:>11.1f}" if cpu_us else ""
        lines.append(f"{n:>8,}  {share:>6.1%}{us}  {name}")
    return "\n".join(lines)


# -- the SVG -------------------------------------------------------------------------


@dataclass(slots=True)
class Node:
    name: str
    samples: int = 0
    children: dict[str, Node] = field(default_factory=dict)


def tree(stacks: list[tuple[list[str], int]]) -> Node:
    root = Node("all")
    for frames, count in stacks:
        root.samples += count
        node = root
        for name in frames:
            node = node.children.setdefault(name, Node(name))
            node.samples += count
    return root


def _depth(node: Node) -> int:
    return 1 + max((_depth(c) for c in node.children.values()), default=0)


def _colour(name: str) -> str:
    """Warm colours, stable per module: the same file keeps its colour between runs."""
    module = name[name.find("(") + 1 :].split(":")[0] if "(" in name else name
    seed = zlib.crc32(module.encode())
    return f"rgb({205 + seed % 50},{80 + (seed >> 8) % 120},{(seed >> 16) % 60})"


def svg(root: Node, title: str) -> str:
    depth = _depth(root)
    height = (depth + 2) * FRAME_HEIGHT_PX
    scale = SVG_WIDTH_PX / max(root.samples, 1)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_WIDTH_PX}" height="{height}" '
        f'font-family="Verdana,sans-serif" font-size="{FONT_PX}">',
        f'<rect width="100%" height="100%" fill="#f8f8f8"/>'
        f'<text x="6" y="{FRAME_HEIGHT_PX - 4}" font-size="{FONT_PX + 2}">'
        f"{html.escape(title)}</text>",
    ]
    # Iterative, outermost frame at the bottom: (node, x, level).
    pending = [(root, 0.0, 0)]
    while pending:
        node, x, level = pending.pop()
        width = node.samples * scale
        if width < MIN_WIDTH_PX:
            continue
        y = height - (level + 1) * FRAME_HEIGHT_PX
        share = node.samples / max(root.samples, 1)
        label = html.escape(node.name)
        out.append(
            f"<g><title>{label}: {node.samples:,} samples ({share:.2%})</title>"
            f'<rect x="{x:.2f}" y="{y}" width="{width:.2f}" height="{FRAME_HEIGHT_PX - 1}" '
            f'fill="{_colour(node.name)}" rx="2"/>'
        )
        chars = int((width - 6) / CHAR_WIDTH_PX)
        if chars >= 3:
            text = node.name if len(node.name) <= chars else node.name[: chars - 2] + ".."
            out.append(
                f'<text x="{x + 3:.2f}" y="{y + FRAME_HEIGHT_PX - 5}">{html.escape(text)}</text>'
            )
        out.append("</g>")
        child_x = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            pending.append((child, child_x, level + 1))
            child_x += child.samples * scale
    out.append("</svg>")
    return "\n".join(out) + "\n"


# -- the command -------------------------------------------------------------------


def report(raw: Path, svg_path: Path | None, cpu_us: float | None, top: int, title: str) -> str:
    stacks = parse(raw.read_text(errors="replace"))
    samples = sum(count for _, count in stacks)
    if not samples:
        raise SystemExit(f"{raw}: no samples (did py-spy attach?)")
    if svg_path is not None:
        svg_path.write_text(svg(tree(stacks), title))
    own, total = self_and_total(stacks)
    parts = [
        top_table(own, samples, f"Top {top} functions by self samples", top, cpu_us),
        top_table(total, samples, f"Top {top} functions by total samples", top, cpu_us),
    ]
    if cpu_us:
        parts.append(f"Tally CPU per transfer in the profiled run: {cpu_us:,.1f} µs")
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("raw", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--svg", type=Path, help="write the flame graph here")
    parser.add_argument("--cpu-us-per-transfer", type=float, help="the run's Tally CPU µs/transfer")
    parser.add_argument("--top", type=int, default=25, help="rows per table (25)")
    parser.add_argument("--title", default="Tally", help="the flame graph's title")
    args = parser.parse_args(argv)
    print(report(args.raw, args.svg, args.cpu_us_per_transfer, args.top, args.title))
    return 0


if __name__ == "__main__":
    sys.exit(main())
