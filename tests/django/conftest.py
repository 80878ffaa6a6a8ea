"""Django set-up for tests/django: the test project on a fresh SQLite file and PostgreSQL database."""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT = Path(__file__).parent / "project"
_RUN = uuid.uuid4().hex[:8]
sys.path.insert(0, str(PROJECT))
os.environ["DJANGO_SETTINGS_MODULE"] = "tchu_site.settings"
os.environ["TCHU_TEST_SQLITE"] = str(Path(tempfile.gettempdir()) / f"tchu_rpc_django_{_RUN}.sqlite3")
os.environ["TCHU_TEST_PG_NAME"] = f"tchu_rpc_django_{_RUN}"
os.environ["TCHU_TEST_MY_NAME"] = f"tchu_rpc_django_{_RUN}"

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connections  # noqa: E402

#: The test process's database aliases, by the backend a test is parametrized with.
ALIASES = {"sqlite": "default", "postgres": "postgres"}
#: MariaDB too, for the tests that run on every backend with row locks (the outbox's).
ALL_ALIASES = {**ALIASES, "mariadb": "mariadb"}
HOW_TO_START = "No PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth) for the Django tests"
HOW_TO_START_MARIADB = "No MariaDB on 127.0.0.1:3306 (user root, no password) for the Django tests"


def _maria_admin(sql: str) -> None:
    import pymysql

    try:
        with pymysql.connect(host="127.0.0.1", port=3306, user="root", password="") as conn:
            conn.cursor().execute(sql)
    except pymysql.err.OperationalError as exc:
        pytest.fail(f"{HOW_TO_START_MARIADB}: {exc}", pytrace=False)


def _admin(sql: str) -> None:
    import psycopg

    try:
        with psycopg.connect(
            "host=127.0.0.1 port=5432 user=postgres dbname=postgres", autocommit=True
        ) as conn:
            conn.execute(sql)
    except psycopg.OperationalError as exc:
        pytest.fail(f"{HOW_TO_START}: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def django_databases() -> Iterator[None]:
    """Create both databases and their tables for the session; drop them afterwards."""
    name = os.environ["TCHU_TEST_PG_NAME"]
    _admin(f'CREATE DATABASE "{name}"')
    _maria_admin(f"CREATE DATABASE `{os.environ['TCHU_TEST_MY_NAME']}`")
    for alias in ALL_ALIASES.values():
        call_command("migrate", run_syncdb=True, database=alias, verbosity=0)
    yield
    connections.close_all()
    _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _maria_admin(f"DROP DATABASE IF EXISTS `{os.environ['TCHU_TEST_MY_NAME']}`")
    Path(os.environ["TCHU_TEST_SQLITE"]).unlink(missing_ok=True)


@pytest.fixture(params=sorted(ALIASES))
def backend(request: pytest.FixtureRequest, django_databases: None) -> str:
    """Return the backend a test runs on: "postgres" or "sqlite"."""
    return str(request.param)
