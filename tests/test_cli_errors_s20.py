"""Session 20's review of the CLI: a user's error is one exception, ``UserError``, or a domain error
``cli/errors.py`` names, said once by the shared handler as "runlytics COMMAND: MESSAGE"."""

from __future__ import annotations

import argparse
import importlib

import pytest

from runlytics.cli import errors
from runlytics.cli.errors import DOMAIN_ERRORS, UserError, _guarded
from runlytics.cli.exits import EXIT_NO_NVML, EXIT_QUERY, EXIT_USAGE


@pytest.mark.parametrize("name", sorted(DOMAIN_ERRORS))
def test_every_domain_error_named_is_an_exception_of_its_module(name: str) -> None:
    # named, not imported (their modules are heavy): a class renamed or moved would be a traceback
    module, _, cls = name.rpartition(".")
    found = getattr(importlib.import_module(module), cls)
    assert isinstance(found, type) and issubclass(found, Exception)
    assert f"{found.__module__}.{found.__qualname__}" == name


def guarded(error: BaseException, command: str | None = "export") -> int:
    def run(args: argparse.Namespace) -> int:
        raise error

    args = argparse.Namespace(command_name=command) if command else argparse.Namespace()
    return _guarded(run, args)


def test_a_user_error_is_one_line_naming_the_command_and_its_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert guarded(UserError("--jobs names no job")) == EXIT_USAGE
    assert capsys.readouterr() == ("", "runlytics export: --jobs names no job\n")
    assert guarded(UserError("no job 'x' in w.duckdb", EXIT_QUERY), "insights set") == EXIT_QUERY
    assert capsys.readouterr().err == "runlytics insights set: no job 'x' in w.duckdb\n"
    assert guarded(UserError("bare"), None) == EXIT_USAGE
    assert capsys.readouterr().err == "runlytics: bare\n"


def test_a_domain_error_is_said_as_it_is_with_its_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    from runlytics.sampler.nvml import NvmlUnavailable
    from runlytics.warehouse import readonly

    class Narrower(readonly.Refused):
        pass

    for error, code in (
        (readonly.Refused("only one read-only SELECT per call; refused: DELETE"), EXIT_QUERY),
        (Narrower("a subclass of one named"), EXIT_QUERY),
        (NvmlUnavailable("NVML is not available"), EXIT_NO_NVML),
    ):
        assert guarded(error, "sql") == code
        assert capsys.readouterr() == ("", f"runlytics sql: {error}\n")


def test_any_other_error_is_a_traceback_not_a_line(capsys: pytest.CaptureFixture[str]) -> None:
    # a bug is not the user's: ValueError and LookupError are the bases of domain errors, not named
    for error in (ValueError("bug"), LookupError("bug"), RuntimeError("bug")):
        with pytest.raises(type(error)):
            guarded(error)
    assert capsys.readouterr() == ("", "")
    assert errors._domain_exit_code(KeyError("x")) is None
