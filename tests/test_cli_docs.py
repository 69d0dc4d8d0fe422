"""Every option of every command has help and is documented (as sqlite-utils' tests/test_docs.py)."""

from __future__ import annotations

import argparse
import re
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
    if prefix == "runlytics":  # words of `insights` with a --help of their own (cli.insights_word_parsers)
        yield from cli.insights_word_parsers().items()


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


POSITIONALS = [
    pytest.param(command, action, id=f"{command} {action.dest}")
    for command, parser in commands(cli._parser())
    for action in parser._actions
    if not action.option_strings and not isinstance(action, argparse._SubParsersAction)
]


@pytest.mark.parametrize(("command", "action"), POSITIONALS)
def test_every_positional_has_help(command: str, action: argparse.Action) -> None:
    assert action.help and action.help.strip(), f"{command} {action.dest} has no help"


@pytest.mark.parametrize("command", [command for command, _ in commands(cli._parser())])
def test_every_command_has_a_description(command: str) -> None:
    """`runlytics db --help` and its subcommands' said only their usage (audit 18)."""
    parser = dict(commands(cli._parser()))[command]
    assert parser.description and parser.description.strip(), f"{command} --help has no description"


@pytest.mark.parametrize(("command", "option", "action"), OPTIONS)
def test_every_help_says_more_than_its_default(command: str, option: str, action: argparse.Action) -> None:
    """`export --format`'s help was "(default: parquet)" alone."""
    said = re.sub(r"\(default: [^)]*\)", "", (action.help or "").replace("%(default)s", "D")).strip()
    assert said, f"{command} {option}: its help is only its default"


@pytest.mark.parametrize("command", [command for command, _ in commands(cli._parser())])
def test_every_option_is_in_the_usage_line(command: str) -> None:
    """`sample`'s hand-written usage left out --host (audit 18)."""
    parser = dict(commands(cli._parser()))[command]
    usage = parser.format_usage()
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--") and not isinstance(action, argparse._HelpAction):
                assert option in usage, f"{command}: {option} is not in its usage: {usage}"


@pytest.mark.parametrize("word", ["thresholds", "set"])
def test_insights_words_have_a_help_of_their_own(word: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`insights set --help` printed the insights list's help (its words are not subcommands)."""
    with pytest.raises(SystemExit) as stop:
        cli.main(["insights", word, "--help"])
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: runlytics insights {word} ") and "--kind" not in out, out
