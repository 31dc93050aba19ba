"""The one exception type users see.

Everything that is the user's doing (a bad path, a wrong key, a file of the wrong kind) is raised as
``UserError``; the CLI prints its message as one or two lines and exits non-zero (``--debug`` shows the
traceback). Anything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input: printed without a traceback."""

    exit_code = 2
    label = "error"  # the word before the message: "vitzoo train: error: ..."


class ConfigError(UserError, ValueError):
    """A bad name, key or value (unknown model, unknown override, wrong type): a ``ValueError`` too."""


def nearest(word: str, choices, n: int = 3) -> str:
    """' (did you mean: a, b?)' for the closest valid choices, or '' when nothing is close."""
    from difflib import get_close_matches

    near = get_close_matches(str(word), [str(c) for c in choices], n=n, cutoff=0.5)
    return f" (did you mean: {', '.join(near)}?)" if near else ""
