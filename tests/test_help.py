"""Every command's ``--help`` renders cleanly (issue 13, item 4).

argparse %-formats help strings, so a literal "%" in a schema help ("~30% slower") printed the whole
action's dict; ArgumentDefaultsHelpFormatter doubled defaults a help text already stated; a help text
named an option its parser refused. This renders ``vitzoo COMMAND --help`` for every command and looks
for those artefacts.
"""
from __future__ import annotations

import argparse
import importlib
import re

import pytest

from vitzoo.cli import COMMANDS
from vitzoo.cli import main as vitzoo_main
from vitzoo.config.build import key_of

OPTION = re.compile(r"(?<![\w-])--[a-z][\w-]*")  # --KEY: a placeholder
OTHER_COMMAND = re.compile(r"\b(vitzoo ([a-z-]+)|torchrun|scripts)\b")  # whose options a help may name


def parser_of(command: str) -> argparse.ArgumentParser:
    return importlib.import_module(COMMANDS[command][0]).build_parser()


def accepts(parser: argparse.ArgumentParser, option: str) -> bool:
    """Would ``parser`` take ``option`` (config parsers also read --key-name as --key_name)?"""
    known = parser._option_string_actions
    return option in known or f"--{key_of(option[2:])}" in known


def render_help(command: str, capsys) -> str:
    with pytest.raises(SystemExit) as done:
        vitzoo_main([command, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


def owner_of(text: str, at: int, command: str) -> str | None:
    """The command an option at ``at`` belongs to: the last ``vitzoo CMD`` named in the same clause, None
    for another tool's (torchrun, the wrapper scripts), else ``command`` itself."""
    clause = re.split(r"[;\[\]]", text[:at])[-1]
    named = OTHER_COMMAND.findall(clause)
    if not named:
        return command
    whole, other = named[-1]
    return other if whole.startswith("vitzoo") and other in COMMANDS else None


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_has_no_formatting_artefacts(command, capsys):
    text = render_help(command, capsys)
    flat = " ".join(text.split())
    assert "{'option_strings'" not in flat and "<argparse." not in flat
    assert "%(" not in flat and "%%" not in flat
    assert not re.search(r"\(default: [^)]*\)\s*\(default:", flat), "default printed twice"
    assert "(default: None)" not in flat and "(default: False)" not in flat  # says nothing
    for entry in re.split(r"\n(?=\s*-)", text):  # the usage, the description, then one entry per option
        entry = " ".join(entry.split())
        for match in OPTION.finditer(entry):
            owner = owner_of(entry, match.start(), command)
            if owner is not None:
                assert accepts(parser_of(owner), match.group()), f"{command} --help names {match.group()}"


def test_percent_in_a_schema_help_is_shown_as_written(capsys):
    text = " ".join(render_help("train", capsys).split())
    assert "activation checkpointing (less memory, ~30% slower)" in text
