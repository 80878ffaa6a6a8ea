"""docs/contracts.md runs as it stands: its files, its commands and their output, its JSON excerpt."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from doc_blocks import DOCS, blocks, files, sessions

PAGE = DOCS / "contracts.md"
SCHEMA = Path(__file__).resolve().parents[1] / "contracts" / "asyncapi" / "3.0.0.json"
#: The commands of the page, run with this interpreter.
PROGRAMS = {"tchu-rpc": [sys.executable, "-m", "tchu_rpc"], "python": [sys.executable]}


@pytest.mark.timeout(120)
def test_the_commands_of_docs_contracts_print_what_it_shows(tmp_path: Path) -> None:
    # Given the page's files in a folder of their own
    page = PAGE.read_text(encoding="utf-8")
    for name, text in files(page).items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    # When each command of the page runs there, Then it succeeds and prints what the page shows
    for command, shown in sessions(page):
        program, *args = shlex.split(command)
        done = subprocess.run(
            [*PROGRAMS[program], *args], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, f"{command}: {done.stderr}"
        assert done.stdout.strip() == shown, command
    # And the document it wrote validates, and holds the operation the page shows
    doc = json.loads((tmp_path / "orders.asyncapi.json").read_text(encoding="utf-8"))
    assert list(jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).iter_errors(doc)) == []
    (excerpt,) = blocks(page, "json")
    assert json.loads(excerpt) == doc["operations"]["orders.call.rpc.orders.get"]
    assert doc["info"] == {"title": "orders", "version": "1.0.0"}
