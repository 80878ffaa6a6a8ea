"""Settings of the Django test project: SQLite, PostgreSQL and MariaDB databases, named by the test session.

The test process has them all (`default`: SQLite, `postgres`: PostgreSQL, `mariadb`: MariaDB); a
worker subprocess is given one as its `default` by `TCHU_TEST_DATABASE`. tchu_rpc's broker and
exchanges come from `TCHU_RPC_*` variables (the environment beneath Django's `TCHU_RPC`).
"""

import os

import pymysql

pymysql.install_as_MySQLdb()  # Django's MySQL backend on PyMySQL (no C headers needed)

SECRET_KEY = "tchu-rpc-tests"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["tchu_rpc.django", "shop"]
TCHU_RPC = {"call_timeout": 10.0}

_SQLITE = {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ.get("TCHU_TEST_SQLITE", ":memory:")}
_POSTGRES = {
    "ENGINE": "django.db.backends.postgresql",
    "HOST": "127.0.0.1",
    "PORT": 5432,
    "USER": "postgres",
    "NAME": os.environ.get("TCHU_TEST_PG_NAME", "test"),
    # Persistent connections checked once per handler: what survives a database restart.
    "CONN_MAX_AGE": None,
    "CONN_HEALTH_CHECKS": True,
}
_MARIADB = {
    "ENGINE": "django.db.backends.mysql",
    "HOST": "127.0.0.1",
    "PORT": 3306,
    "USER": "root",
    "PASSWORD": "",
    "NAME": os.environ.get("TCHU_TEST_MY_NAME", "test"),
}
_BY_NAME = {"sqlite": _SQLITE, "postgres": _POSTGRES, "mariadb": _MARIADB}
_ONE = os.environ.get("TCHU_TEST_DATABASE")
DATABASES = (
    {"default": _BY_NAME[_ONE]} if _ONE else {"default": _SQLITE, "postgres": _POSTGRES, "mariadb": _MARIADB}
)

# With TCHU_TEST_LOG_FILE, Django's LOGGING sends tchu_rpc's records (debug and up) to that file.
if os.environ.get("TCHU_TEST_LOG_FILE"):
    LOGGING = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "%(levelname)s %(name)s %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "filename": os.environ["TCHU_TEST_LOG_FILE"],
                "formatter": "plain",
            }
        },
        "loggers": {"tchu_rpc": {"handlers": ["file"], "level": "DEBUG"}},
    }
