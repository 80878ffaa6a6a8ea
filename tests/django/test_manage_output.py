"""`manage.py` output in a project with `tchu_rpc.django` installed: tchu_rpc writes nothing to stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from conftest import PROJECT
from shop.models import Seen


def _manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "TCHU_TEST_DATABASE": "postgres", **env}
    command = [sys.executable, "manage.py", *args]
    return subprocess.run(command, cwd=PROJECT, env=environ, capture_output=True, text=True, timeout=60)


def test_dumpdata_output_is_valid_json(django_databases: None) -> None:
    # Given a row in the project's PostgreSQL database (the subprocess's `default`)
    seen = Seen.objects.using("postgres").create(topic=f"dumpdata.{uuid.uuid4().hex}", order_pk=7)
    try:
        # When `manage.py dumpdata` runs, with no logging configured by the project
        done = _manage("dumpdata", "shop.seen")
    finally:
        seen.delete()
    # Then its stdout is the data alone
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert seen.topic in [row["fields"]["topic"] for row in rows]


def test_djangos_logging_receives_tchu_rpcs_records(tmp_path: Path, django_databases: None) -> None:
    # Given a project whose LOGGING sends the `tchu_rpc` logger, at debug, to a file
    log = tmp_path / "django.log"
    # When a management command starts (the app imports the subscribers modules)
    done = _manage("dumpdata", "shop.seen", TCHU_TEST_LOG_FILE=str(log))
    # Then the record went to Django's handler, in Django's format, and stdout holds the data alone
    assert done.returncode == 0, done.stderr
    json.loads(done.stdout)
    assert "DEBUG tchu_rpc.django.apps subscribers_imported modules=['shop.subscribers']" in log.read_text()
