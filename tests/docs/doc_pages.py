"""Read the documentation pages: their fenced code blocks, links, headings and tables."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: The pages whose code blocks run and whose links are checked: README.md and docs/*.md.
PAGES = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))

_FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_NOT_RUN = re.compile(r"<!--\s*not-run:\s*(?P<reason>[^>]*?)\s*-->\s*\Z")
#: A block another test runs as it stands (`tests/integration/test_migration_guide.py`, on RabbitMQ).
_GUIDE_TEST = re.compile(r"<!--\s*guide-test:\s*[\w-]+\s*-->\s*\Z")
_LINK = re.compile(r"(?<!!)\[[^\]]*\]\((?P<target>[^)\s]+)\)")
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_HEADING = re.compile(r"^#{1,6}[ \t]+(?P<title>.+?)[ \t]*#*[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language, its code, where it starts, and a `not-run` reason if marked."""

    page: Path
    line: int
    lang: str
    code: str
    not_run: str | None
    #: Run by a test of its own (`<!-- guide-test: NAME -->`), not in the page's namespace.
    guide_test: bool = False

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """Return the fenced code blocks of `page`, in order."""
    text = page.read_text()
    found = []
    for match in _FENCE.finditer(text):
        before = text[: match.start()].rstrip() + "\n" if match.start() else ""
        marked = _NOT_RUN.search(before)
        line = text.count("\n", 0, match.start()) + 2  # the block's first line of code
        reason = marked.group("reason") if marked else None
        guide = _GUIDE_TEST.search(before) is not None
        found.append(Block(page, line, match.group("lang"), match.group("code"), reason, guide))
    return found


def prose(page: Path) -> str:
    """Return `page` without its code blocks and inline code (where links are not links)."""
    return _INLINE_CODE.sub("", _FENCE.sub("", page.read_text()))


def links(page: Path) -> list[str]:
    """Return the targets of the markdown links of `page`."""
    return [match.group("target") for match in _LINK.finditer(prose(page))]


def slug(title: str) -> str:
    """Return the anchor GitHub makes of a heading."""
    title = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", title)  # a link's text stays
    kept = re.sub(r"[^\w\- ]", "", title.lower())
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Return the anchors of the headings of `page` (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = {}
    found = set()
    for match in _HEADING.finditer(_FENCE.sub("", page.read_text())):
        base = slug(match.group("title"))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def table_rows(page: Path, header: str) -> list[list[str]]:
    """Return the cells of the rows of the table whose header row starts with `header`."""
    rows: list[list[str]] = []
    inside = False
    for line in page.read_text().splitlines():
        if line.startswith(header):
            inside = True
            continue
        if inside and not line.startswith("|"):
            break
        if inside and not set(line) <= set("|-: "):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]])
    return rows


def code_spans(cell: str) -> list[str]:
    """Return the inline code spans of a table cell, without their backticks."""
    return [span.strip("`") for span in _INLINE_CODE.findall(cell)]
