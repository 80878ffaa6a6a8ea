"""The code blocks of a docs page: python files (named by `# file: NAME.py`), console sessions, JSON."""

from __future__ import annotations

import re
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs"
_FILE = re.compile(r"# file: ([\w./-]+\.py)\n")


def blocks(page: str, language: str) -> list[str]:
    """Return the text of each fenced block of `language` in `page`, in order."""
    fence = re.compile(rf"^```{language}\n(.*?)^```$", re.DOTALL | re.MULTILINE)
    return fence.findall(page)


def files(page: str) -> dict[str, str]:
    """Return the page's python blocks by the file name each starts with (each must name one)."""
    found = {}
    for block in blocks(page, "python"):
        named = _FILE.match(block)
        assert named, f"a python block does not start with '# file: NAME.py':\n{block[:200]}"
        found[named.group(1)] = block
    return found


def sessions(page: str) -> list[tuple[str, str]]:
    """Return each `$ command` of the page's console blocks with the output shown after it."""
    found = []
    for block in blocks(page, "console"):
        for part in re.split(r"^\$ ", block, flags=re.MULTILINE)[1:]:
            command, _, output = part.partition("\n")
            found.append((command, output.strip()))
    return found
