"""The config on the command line: ``--config YAML`` plus one ``--key value`` flag per option, and back.

Every option's flag, type hint, default and help come from the schema, so ``--help`` is always the
schema; aliases are accepted but hidden. ``--key-name`` and ``--key_name`` are the same flag.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import yaml

from vitzoo.config.build import build, key_of, known_keys, suggest_key
from vitzoo.config.compat import IGNORED, MAPPED
from vitzoo.config.schema import KINDS, SECTIONS, RunConfig, default_of, schema
from vitzoo.errors import ConfigError

CLI_ONLY = ("config", "dry_run")
_METAVAR = {"bool": "BOOL", "int": "INT", "float": "FLOAT", "str": "STR", "floats": "FLOAT", "dict": "YAML"}


def read_yaml(path: str) -> dict:
    """A flat YAML mapping; a clear error for a missing file, bad YAML or a non-mapping top level."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of 'key: value' lines, got "
                          f"{type(data).__name__}")
    return data


class _Parser(argparse.ArgumentParser):
    """argparse that takes --key-name as --key_name and raises ConfigError instead of exiting."""

    def parse_known_args(self, args=None, namespace=None):
        args = list(sys.argv[1:] if args is None else args)
        fixed: list[str] = []
        for a in args:
            if a.startswith("--") and len(a) > 2:
                key, eq, val = a[2:].partition("=")
                a = "--" + key_of(key) + eq + val
            elif fixed and fixed[-1].startswith("--") and "=" not in fixed[-1] and _is_negative_number(a):
                # argparse takes "-1e-06" for an option (only "-1" / "-0.5" look numeric to it)
                a = f"{fixed.pop()}={a}"
            fixed.append(a)
        return super().parse_known_args(fixed, namespace)

    def error(self, message):
        raise ConfigError(f"{message} (see {self.prog} --help)")


def _is_negative_number(text: str) -> bool:
    try:
        return text.startswith("-") and float(text) < 0
    except ValueError:
        return False


def build_parser(prog: str = "vitzoo train", description: str | None = None) -> argparse.ArgumentParser:
    """--config, --dry-run and one --key per option (aliases hidden but accepted), grouped by section."""
    p = _Parser(prog=prog, description=description or "Train a model from a YAML config; any key can be "
                "given as --KEY VALUE (CLI wins over YAML), spelled either way: --batch-size = --batch_size.",
                usage="%(prog)s [--config YAML] [--dry-run] [--KEY VALUE ...]",
                formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    p.add_argument("--config", "--config_path", dest="config", default=None, metavar="YAML",
                   help="YAML config file (flat keys, any seed dialect)")
    p.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="print the resolved config (every key) and exit")
    groups = {sec: p.add_argument_group(title) for sec, title in SECTIONS.items()}
    for f in schema():
        m, kind = f.metadata, KINDS[f.name]
        extra = f"; choices: {', '.join(m['choices'])}" if m["choices"] else ""
        alias = f"; alias: {', '.join(m['aliases'])}" if m["aliases"] else ""
        kw = _flag_kwargs(f.name, kind.base)
        text = f"{m['help']} [default: {_show(default_of(f.name))}{extra}{alias}]"
        groups[m["section"]].add_argument(f"--{f.name}", help=_literal(text), **kw)
        for a in m["aliases"]:
            p.add_argument(f"--{a}", help=argparse.SUPPRESS, **kw)
    compat = p.add_argument_group("MindSpore seed keys (mapped or accepted without effect)")
    for key, (name, base, _) in MAPPED.items():
        compat.add_argument(f"--{key}", help=_literal(f"sets {name}"), **_flag_kwargs(key, base))
    for key, why in IGNORED.items():
        compat.add_argument(f"--{key}", dest=key, default=argparse.SUPPRESS, metavar="X", nargs="?",
                            const="true", help=_literal(f"no effect: {why}"))
    return p


def _literal(text: str) -> str:
    """Help text shown as written: argparse %-formats help strings ("~30% slower" would break)."""
    return text.replace("%", "%%")


def _flag_kwargs(dest: str, base: str) -> dict[str, Any]:
    kw: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "metavar": _METAVAR[base]}
    if base == "floats":
        kw["nargs"] = "+"
    elif base == "bool":  # `--model_ema` alone means true
        kw.update(nargs="?", const="true")
    return kw


def _show(v: Any) -> str:
    return "''" if v == "" else json.dumps(v) if isinstance(v, (list, dict, bool, type(None))) else str(v)


def config_from_namespace(ns: argparse.Namespace) -> RunConfig:
    """YAML from ns.config (if any) overridden by the keys given on the command line."""
    known = set(known_keys())
    cli = {k: v for k, v in vars(ns).items() if k not in CLI_ONLY and key_of(k) in known}
    for k, v in cli.items():  # nargs="+" on a list field: one token may itself be "[0.9,0.999]"
        if isinstance(v, list) and len(v) == 1:
            cli[k] = v[0]
    config = vars(ns).get("config")
    sources = [(read_yaml(config), config)] if config else []
    return build(sources + [(cli, "command line")])


def parse_args(argv: list[str] | None = None, prog: str = "vitzoo train", description: str | None = None,
               parser: argparse.ArgumentParser | None = None) -> tuple[RunConfig, argparse.Namespace]:
    """Parse a command line into (RunConfig, namespace with .config and .dry_run); unknown -> ConfigError."""
    parser = parser or build_parser(prog, description)
    ns, rest = parser.parse_known_args(argv)
    if rest:
        bad = rest[0]
        key = key_of(bad.lstrip("-").partition("=")[0])
        hint = suggest_key(key).replace(": ", ": --").replace(", ", ", --") if bad.startswith("-") else ""
        typed = next((a for a in (sys.argv[1:] if argv is None else argv)
                      if a.startswith("--") and key_of(a[2:].partition("=")[0]) == key), bad.partition("=")[0])
        raise ConfigError(f"unknown option '{typed.partition('=')[0]}'{hint} (see {parser.prog} --help)")
    return config_from_namespace(ns), ns


def load_config(path: str | None = None, overrides: list[str] | None = None) -> RunConfig:
    """YAML file (or None) + CLI-style overrides (['--batch_size', '8', ...]) -> validated RunConfig."""
    args = (["--config", path] if path else []) + list(overrides or [])
    return parse_args(args)[0]


def dump_config(cfg: RunConfig) -> str:
    """YAML text of every resolved canonical key, by section; loading it gives the same config."""
    lines = ["# vitzoo resolved config (canonical keys; load with: vitzoo train --config THIS_FILE)"]
    lines += [f"# note: {n}" for n in cfg.notes]
    section = None
    for f in schema():
        if f.metadata["section"] != section:
            section = f.metadata["section"]
            lines.append(f"\n# ===== {SECTIONS[section]} ===== #")
        value = getattr(cfg, f.name)
        if isinstance(value, (list, dict)):
            text = f"{f.name}: " + yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
        else:
            text = yaml.safe_dump({f.name: value}, default_flow_style=False, width=10_000).strip()
        lines.append(f"{text:<40} # {f.metadata['help']}")
    return "\n".join(lines) + "\n"
