"""The run configuration: one flat, typed, validated :class:`RunConfig` from YAML + command line.

- ``schema.py``: the fields (type, default, help, aliases, rule) -- the one place an option is defined;
- ``compat.py``: the seeds' dialects (value spellings, MindSpore keys mapped or ignored);
- ``types.py``: YAML/CLI values -> the annotated types;
- ``build.py``: sources -> validated RunConfig (per-key rules, then cross-key rules);
- ``cli.py``: ``--key value`` flags, ``--help``, YAML reading and the resolved-config dump.
"""
from __future__ import annotations

from vitzoo.config.build import config_from_dict
from vitzoo.config.cli import build_parser, dump_config, load_config, parse_args, read_yaml
from vitzoo.config.schema import RunConfig, schema

__all__ = ["RunConfig", "build_parser", "config_from_dict", "dump_config", "load_config", "parse_args",
           "read_yaml", "schema"]
