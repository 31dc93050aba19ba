"""The ``--help`` layout the commands share: argparse's "(default: X)" without its noise.

Why: ``ArgumentDefaultsHelpFormatter`` appends "(default: X)" to every option, also after a help text
that already states the default ("(default: the file's) (default: None)"), and for flags and unset
options ("(default: False)", "(default: None)"), which say nothing.
"""
from __future__ import annotations

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Append "(default: X)" only when the help does not mention the default and X is a real value."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == []
        if "default" in text or unset or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action) or text
