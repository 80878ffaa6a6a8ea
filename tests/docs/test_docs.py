"""The docs hold: their Python examples run, their links lead somewhere, the configuration reference is whole.

Convention for code blocks in README.md and docs/*.md:
- every ```python block runs. A page's blocks run in order in one namespace (as doctest does), on the
  `memory://` broker with exchanges of their own (`TCHU_RPC_BROKER_URL`, `TCHU_RPC_EVENTS_EXCHANGE`,
  `TCHU_RPC_CALLS_EXCHANGE` set for the page), with the default registry of `@subscribe` emptied
  before and after the page. A block that starts a worker or a client stops it: no tchu thread is
  left when the page is done;
- a block that cannot run (a fragment of a settings file, a Dockerfile) uses another language
  (```text, ```ini, ```sh); a Python block that cannot run follows `<!-- not-run: reason -->`, and
  there are at most `MAX_NOT_RUN` of those in all the docs;
- a ```python block after `<!-- guide-test: NAME -->` runs in the test that names it
  (`tests/integration/test_migration_guide.py`, against RabbitMQ and a real worker);
- a ```python block that starts with `# file: NAME.py` is a file of an example project: the page's
  own test (`tests/docs/test_<page>_doc.py`) writes its files and runs them;
- ```sh lines that run `tchu-rpc SUBCOMMAND` name only options that subcommand has.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from doc_pages import PAGES, ROOT, Block, anchors, blocks, code_spans, links, table_rows

from tchu_rpc.cli import build_parser
from tchu_rpc.config import ENV_PREFIX, Settings
from tchu_rpc.registry import default_registry

MAX_NOT_RUN = 5
#: A block that is a file of an example (`docs/testing.md`): its page's own test writes and runs it.
_FILE = "# file: "
CONFIGURATION = ROOT / "docs" / "configuration.md"
_TCHU_THREADS = re.compile(r"tchu-(worker-.+|client|call-.+|event-.+)$")


def _page_id(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _python_blocks(page: Path) -> list[Block]:
    return [
        block
        for block in blocks(page)
        if block.lang == "python"
        and block.not_run is None
        and not block.guide_test
        and not block.code.startswith(_FILE)
    ]


def test_pages_of_example_files_have_a_test_that_runs_them() -> None:
    # A page whose blocks are files (`# file: NAME.py`: a service and its tests) runs them as files.
    for page in PAGES:
        if any(b.lang == "python" and b.code.startswith(_FILE) for b in blocks(page)):
            own = ROOT / "tests" / "docs" / f"test_{page.stem.replace('-', '_')}_doc.py"
            assert own.is_file(), f"{_page_id(page)} has example files, and no {own.relative_to(ROOT)}"


# -- the Python examples --------------------------------------------------------------------------


@pytest.fixture
def page_broker(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point `Settings.from_env()` at memory:// and exchanges of this page; empty `@subscribe`'s registry."""
    prefix = f"docs-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TCHU_RPC_BROKER_URL", "memory://")
    monkeypatch.setenv("TCHU_RPC_EVENTS_EXCHANGE", f"{prefix}.events")
    monkeypatch.setenv("TCHU_RPC_CALLS_EXCHANGE", f"{prefix}.calls")
    default_registry.clear()
    yield
    default_registry.clear()
    if "tchu_rpc.compat" in sys.modules:  # the compat API's shared client, made on first use
        from tchu_rpc.compat import set_default_client

        shared = set_default_client(None)
        if shared is not None:
            shared.close()


def _tchu_threads_left(timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        left = [t.name for t in threading.enumerate() if _TCHU_THREADS.match(t.name) and t.is_alive()]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.mark.parametrize("page", [p for p in PAGES if _python_blocks(p)], ids=_page_id)
def test_python_examples_of_the_page_run_in_order(page: Path, page_broker: None) -> None:
    # Given the page's Python blocks, in one namespace
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    # When each runs in turn
    for block in _python_blocks(page):
        exec(compile(block.code, block.where, "exec"), namespace)
    # Then none left a worker or a client running
    assert _tchu_threads_left() == [], f"{_page_id(page)}: an example left a worker or client running"


def test_few_python_examples_are_marked_not_run() -> None:
    marked = [b for page in PAGES for b in blocks(page) if b.lang == "python" and b.not_run is not None]
    assert all(b.not_run for b in marked), [b.where for b in marked if not b.not_run]
    assert len(marked) <= MAX_NOT_RUN, [b.where for b in marked]


def test_every_code_block_names_its_language() -> None:
    unnamed = [b.where for page in PAGES for b in blocks(page) if not b.lang]
    assert unnamed == [], "say ```python, ```sh or ```text"


def _subcommands() -> dict[str, set[str]]:
    parser = build_parser()
    choices = next(a for a in parser._actions if a.dest == "command").choices
    assert isinstance(choices, dict)
    # `bench` forwards its arguments to the harness in benchmarks/, which a clone has.
    return {name: set(sub._option_string_actions) for name, sub in choices.items() if name != "bench"}


def test_command_lines_in_the_docs_use_options_the_cli_has() -> None:
    subcommands = _subcommands()
    wrong = []
    for page in PAGES:
        for block in blocks(page):
            if block.lang not in ("sh", "bash", "console"):
                continue
            for line in block.code.splitlines():
                command = re.search(r"(?:^|\s)tchu-rpc\s+(?P<sub>[a-z]+)(?P<rest>.*)", line.split("#")[0])
                if command is None:
                    continue
                if command.group("sub") == "bench":
                    continue
                options = subcommands.get(command.group("sub"))
                flags = re.findall(r"(?<![\w-])--[a-z][a-z-]*", command.group("rest"))
                if options is None or not set(flags) <= options:
                    wrong.append(f"{block.where}: {line.strip()}")
    assert wrong == []


# -- links ----------------------------------------------------------------------------------------


def _broken(page: Path, target: str) -> str | None:
    if re.match(r"[a-z][a-z+.-]*:", target):  # https:, mailto: ...
        return None
    path, _, anchor = target.partition("#")
    goal = (page.parent / path).resolve() if path else page
    if not goal.exists():
        return f"{target}: no such file"
    if anchor and goal.suffix == ".md" and anchor not in anchors(goal):
        return f"{target}: no heading #{anchor} in {goal.relative_to(ROOT)}"
    return None


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_relative_links_lead_to_files_and_headings_that_exist(page: Path) -> None:
    broken = [problem for target in links(page) if (problem := _broken(page, target))]
    assert broken == []


def test_readme_is_a_short_front_door_that_links_every_page() -> None:
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) < 200
    linked = {(readme.parent / target.partition("#")[0]).resolve() for target in links(readme)}
    assert set(PAGES[1:]) <= linked, "README's list of docs misses a page"
    quick_start = [b.code for b in blocks(readme) if b.lang == "sh" and "./scripts/" in b.code]
    assert (
        quick_start and quick_start[0].startswith("./scripts/demo") and "\n./scripts/test" in quick_start[0]
    )


# -- the configuration reference -------------------------------------------------------------------


def reference_problems(rows: list[list[str]], settings: type[Any]) -> list[str]:
    """Compare the reference table's rows (field, variable, default, meaning) with a settings class."""
    fields = {f.name: f for f in dataclasses.fields(settings)}
    problems, documented = [], set()
    for row in rows:
        name, variable, default = (code_spans(cell)[0] if code_spans(cell) else cell for cell in row[:3])
        documented.add(name)
        if name not in fields:
            problems.append(f"{name}: documented, but Settings has no such field")
            continue
        if variable != ENV_PREFIX + name.upper():
            problems.append(f"{name}: its variable is {ENV_PREFIX + name.upper()}, not {variable}")
        real = fields[name].default
        if getattr(settings.from_env({ENV_PREFIX + name.upper(): default}), name) != real:
            problems.append(f"{name}: documented default {default!r}, real default {real!r}")
        if not row[3]:
            problems.append(f"{name}: no meaning given")
    missing = sorted(fields.keys() - documented)
    problems += [f"{name}: a Settings field missing from the reference" for name in missing]
    return problems


def _reference_rows() -> list[list[str]]:
    return table_rows(CONFIGURATION, "| field | environment variable | default | meaning |")


def test_configuration_reference_documents_every_setting_with_its_variable_and_default() -> None:
    rows = _reference_rows()
    assert len(rows) >= 30
    assert reference_problems(rows, Settings) == []


@dataclasses.dataclass(frozen=True)
class _Grown(Settings):
    """Settings with one field more, as a change to config.py would add."""

    new_knob: int = 3


def test_configuration_check_fails_for_a_field_added_without_docs() -> None:
    assert reference_problems(_reference_rows(), _Grown) == [
        "new_knob: a Settings field missing from the reference"
    ]


def test_configuration_check_fails_for_a_documented_field_that_does_not_exist() -> None:
    rows = [*_reference_rows(), ["`old_knob`", "`TCHU_RPC_OLD_KNOB`", "`1`", "gone"]]
    assert reference_problems(rows, Settings) == ["old_knob: documented, but Settings has no such field"]


def test_configuration_check_fails_for_a_wrong_default_or_variable() -> None:
    rows = [list(row) for row in _reference_rows()]
    row = next(r for r in rows if r[0] == "`event_prefetch`")
    row[1], row[2] = "`TCHU_RPC_PREFETCH`", "`1`"
    assert reference_problems(rows, Settings) == [
        "event_prefetch: its variable is TCHU_RPC_EVENT_PREFETCH, not TCHU_RPC_PREFETCH",
        "event_prefetch: documented default '1', real default 10",
    ]


# -- the site ---------------------------------------------------------------------------------------


def test_the_docs_build_as_a_site_without_warnings(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert built.returncode == 0, built.stderr
    assert (tmp_path / "site" / "guide" / "index.html").exists()
