"""Every option of every command has help and is documented (as sqlite-utils' tests/test_docs.py)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import pytest

from runlytics import cli

REPO = Path(__file__).resolve().parent.parent
DOCS = "\n".join(p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))])


def commands(
    parser: argparse.ArgumentParser, prefix: str = "runlytics"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, f"{prefix} {name}")


OPTIONS = [
    pytest.param(command, option, action, id=f"{command} {option}")
    for command, parser in commands(cli._parser())
    for action in parser._actions
    if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
    for option in action.option_strings
    if option.startswith("--")
]


def test_every_command_is_listed() -> None:
    names = [command for command, _ in commands(cli._parser())]
    assert {"runlytics ingest", "runlytics sql", "runlytics serve", "runlytics db upgrade"} <= set(names)
    assert len(OPTIONS) > 20


@pytest.mark.parametrize(("command", "option", "action"), OPTIONS)
def test_every_option_has_help_and_is_documented(command: str, option: str, action: argparse.Action) -> None:
    assert action.help and action.help.strip(), f"{command} {option} has no help"
    assert option in DOCS, f"{command} {option} is not in README.md or docs/"


@pytest.mark.parametrize("command", [command for command, _ in commands(cli._parser())])
def test_every_help_ends_with_examples(command: str) -> None:
    parser = dict(commands(cli._parser()))[command]
    help_text = parser.format_help().rstrip("\n")
    assert "\nExamples:\n" in help_text, f"{command} --help has no examples"
    lines = help_text.rsplit("\nExamples:\n", 1)[1].splitlines()
    # at least one, and every line an example of this command (or of one of its subcommands)
    assert lines and all(f"{line} ".startswith(f"  {command} ") for line in lines), f"{command}: {lines}"
