"""The public façade: `tchu_rpc.__all__` is sorted and complete; the exception tree is sound."""

from __future__ import annotations

import ast
import builtins
import inspect
import pickle
import re
from pathlib import Path

import pytest

import tchu_rpc
from tchu_rpc import errors

_EXCEPTIONS = [
    obj
    for _, obj in inspect.getmembers(errors, inspect.isclass)
    if issubclass(obj, BaseException) and obj.__module__ == errors.__name__
]


def _names_imported_by_init() -> set[str]:
    tree = ast.parse(Path(tchu_rpc.__file__).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ImportFrom | ast.Import):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
    return names


def test_all_is_sorted() -> None:
    assert tchu_rpc.__all__ == sorted(tchu_rpc.__all__)


def test_all_has_no_duplicates() -> None:
    assert len(tchu_rpc.__all__) == len(set(tchu_rpc.__all__))


def test_every_name_in_all_exists() -> None:
    missing = [name for name in tchu_rpc.__all__ if not hasattr(tchu_rpc, name)]
    assert missing == []


def test_every_public_name_imported_by_init_is_in_all() -> None:
    public = {name for name in _names_imported_by_init() if not name.startswith("_")}
    assert public - {"annotations"} <= set(tchu_rpc.__all__)


def test_version_is_exported_as_a_string() -> None:
    assert "__version__" in tchu_rpc.__all__
    assert isinstance(tchu_rpc.__version__, str)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from tchu_rpc import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(tchu_rpc.__all__)


def test_errors_module_defines_exceptions() -> None:
    assert len(_EXCEPTIONS) >= 10


@pytest.mark.parametrize("exc_type", _EXCEPTIONS, ids=lambda t: t.__name__)
def test_every_exception_derives_from_tchu_error(exc_type: type[BaseException]) -> None:
    assert issubclass(exc_type, errors.TchuError)


@pytest.mark.parametrize("exc_type", _EXCEPTIONS, ids=lambda t: t.__name__)
def test_every_exception_is_exported(exc_type: type[BaseException]) -> None:
    assert exc_type.__name__ in tchu_rpc.__all__
    assert getattr(tchu_rpc, exc_type.__name__) is exc_type


@pytest.mark.parametrize("exc_type", _EXCEPTIONS, ids=lambda t: t.__name__)
def test_no_exception_is_named_after_a_builtin(exc_type: type[BaseException]) -> None:
    assert not hasattr(builtins, exc_type.__name__)


@pytest.mark.parametrize("exc_type", _EXCEPTIONS, ids=lambda t: t.__name__)
def test_every_exception_is_drawn_in_the_module_docstring(exc_type: type[BaseException]) -> None:
    assert errors.__doc__ is not None
    assert re.search(rf"\b{exc_type.__name__}\b", errors.__doc__)


def test_call_timeout_is_a_timeout_error() -> None:
    assert issubclass(errors.CallTimeout, TimeoutError)


def test_connection_lost_is_a_connection_error() -> None:
    assert issubclass(errors.ConnectionLost, ConnectionError)


@pytest.mark.parametrize(
    "exc_type",
    [
        errors.ConfigError,
        errors.TopicError,
        errors.RegistryError,
        errors.EncodeError,
        errors.DecodeError,
        errors.MessageTooLarge,
    ],
    ids=lambda t: t.__name__,
)
def test_invalid_value_errors_are_value_errors(exc_type: type[BaseException]) -> None:
    assert issubclass(exc_type, ValueError)


def test_remote_error_pickles_round_trip_with_its_fields() -> None:
    # Given a remote error with every field set
    original = errors.RemoteError("KeyError", "no such user", code="not_found", details={"id": [1, 2]})

    # When it crosses a pickle round trip (a process pool, a multiprocessing queue)
    copy = pickle.loads(pickle.dumps(original))

    # Then it is the same error, field by field
    assert type(copy) is errors.RemoteError
    assert (copy.type, copy.message, copy.code, copy.details) == (
        "KeyError",
        "no such user",
        "not_found",
        {"id": [1, 2]},
    )
    assert str(copy) == str(original) == "KeyError: no such user"


def test_remote_error_without_message_is_named_by_its_type() -> None:
    exc = errors.RemoteError("Boom", "")
    assert str(exc) == "Boom"
    assert exc.code is None
    assert exc.details is None


def test_rpc_error_keeps_code_and_details() -> None:
    exc = errors.RpcError("no user 9", code="not_found", details={"id": 9})
    assert (str(exc), exc.message, exc.code, exc.details) == (
        "no user 9",
        "no user 9",
        "not_found",
        {"id": 9},
    )
