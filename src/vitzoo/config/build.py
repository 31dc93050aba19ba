"""Sources (YAML mapping, command line, a checkpoint's dict) -> one validated RunConfig.

Precedence: defaults < YAML < command line. Each key is resolved to its canonical name, typed, its
value spelling normalised and its rule checked; then the few rules that span several keys. A failure
is one ConfigError naming the key as the user spelled it and where it came from.
"""
from __future__ import annotations

from typing import Any

from vitzoo.config.compat import DEVICE_TARGETS, IGNORED, MAPPED, SYNONYMS, mapped_note
from vitzoo.config.schema import ALIASES, FIELDS, KINDS, RunConfig
from vitzoo.config.types import Kind, coerce
from vitzoo.errors import ConfigError, nearest

OFF_WORDS = ("", "none", "null", "false", "off")


def key_of(spelling: str) -> str:
    """``--batch-size`` / ``Batch_Size`` -> ``batch_size``."""
    return spelling.replace("-", "_").lower()


def known_keys() -> list[str]:
    return list(ALIASES) + list(MAPPED) + list(IGNORED)


def suggest_key(key: str) -> str:
    """' (did you mean: a, b?)' for an unknown key: the option it means in other toolkits when known
    (``learning_rate`` -> ``lr``: spelling alone would offer ``decay_rate``), else close spellings."""
    key = key_of(key)
    if key in SYNONYMS:  # the meaning is known: the look-alikes would only distract
        return f" (did you mean: {SYNONYMS[key]}?)"
    return nearest(key, known_keys())


def build(sources: list[tuple[dict, str]], strict: bool = True) -> RunConfig:
    """defaults < sources[0] < sources[1] ... (YAML first, command line last), then validate."""
    notes: list[str] = []
    values: dict[str, Any] = {}
    explicit: dict[str, str] = {}
    for raw, where in sources:
        collected = _collect(raw, where, strict, notes)
        values.update({k: v for k, (v, _) in collected.items()})
        explicit.update({k: where for k in collected})
    cfg = RunConfig(**values)
    cfg.notes = list(dict.fromkeys(notes))
    cfg.explicit = explicit
    _normalise(cfg)
    _validate(cfg)
    return cfg


def config_from_dict(d: dict, strict: bool = False) -> RunConfig:
    """Rebuild from a dict (canonical or alias keys). strict=False drops unknown keys with a note, so a
    checkpoint written by another vitzoo version still loads."""
    return build([(dict(d), "config dict")], strict=strict)


def field_value(name: str, value: Any, key: str, where: str) -> Any:
    """One value for field ``name`` (spelled ``key`` in ``where``): typed, choice normalised, rule checked."""
    f = FIELDS[name]
    if value is None and KINDS[name] == Kind("str", False) and f.default == "":
        return ""  # `pretrained: null` means no file, as ''
    value = coerce(KINDS[name], value, key, where)
    choices, rule = f.metadata["choices"], f.metadata["rule"]
    if choices and value is not None:
        low = value.strip().lower()
        low = f.metadata["names"].get(low, low)
        match = [c for c in choices if c.lower() == low]
        if not match:
            raise ConfigError(f"config key '{key}' ({where}): {value!r} is not one of "
                              f"{', '.join(choices)}{nearest(low, choices)}")
        value = match[0]
    if rule is not None and value is not None and not rule.holds(value):
        raise ConfigError(f"config key '{key}' ({where}) must be {rule.describe()}, got {value}")
    return value


def _collect(raw: dict, where: str, strict: bool, notes: list[str]) -> dict[str, tuple[Any, str]]:
    """Resolve one source's keys to canonical names: {canonical: (typed value, key as spelled)}."""
    out: dict[str, tuple[Any, str]] = {}
    for spelled, value in raw.items():
        spelled = str(spelled)
        key = key_of(spelled)
        if key in IGNORED:
            notes.append(f"{spelled}: no effect here ({IGNORED[key]})")
            continue
        if key in MAPPED:
            name, base, convert = MAPPED[key]
            try:
                typed = convert(coerce(Kind(base, False), value, spelled, where))
            except KeyError:
                raise ConfigError(f"config key '{spelled}' ({where}): {value!r} is not one of "
                                  f"{DEVICE_TARGETS}") from None
            typed = field_value(name, typed, spelled, where)
            notes.append(mapped_note(spelled, value, name, typed))
        elif key in ALIASES:
            name = ALIASES[key]
            typed = field_value(name, value, spelled, where)
        elif strict:
            raise ConfigError(f"unknown config key '{spelled}' ({where}){suggest_key(key)}")
        else:
            notes.append(f"{spelled}: unknown key ignored ({where})")
            continue
        if name in out and out[name][0] != typed:
            raise ConfigError(f"config keys '{out[name][1]}' ({out[name][0]!r}) and '{spelled}' ({typed!r}) "
                              f"in {where} both set '{name}' to different values; keep one")
        out[name] = (typed, spelled)
    return out


def _normalise(cfg: RunConfig) -> None:
    """One spelling per meaning, so consumers compare against a single value."""
    if cfg.aa is None or cfg.aa.strip().lower() in OFF_WORDS:
        cfg.aa = "none"
    cfg.aa = cfg.aa.strip()
    if cfg.layer_decay == 1.0:
        cfg.layer_decay = None
    if cfg.clip_grad is None and cfg.use_clip_grad_norm:
        cfg.clip_grad = cfg.clip_grad_norm  # seed style resolved into one key
    cfg.model = cfg.model.strip()
    cfg.device = cfg.device.strip().lower()


def _validate(cfg: RunConfig) -> None:
    """The rules that span several keys or are not a single range; per-key ranges live on the fields."""
    def need(ok: bool, msg: str) -> None:
        if not ok:
            raise ConfigError(msg)

    need(bool(cfg.model), "config key 'model' is empty: give a registered model name (vitzoo models)")
    dev = cfg.device
    need(dev in ("auto", "cuda", "cpu") or (dev.startswith("cuda:") and dev[5:].isdigit()),
         f"config key 'device': {cfg.device!r} is not one of auto, cuda, cuda:N, cpu")
    need(cfg.start_epoch <= cfg.epochs, f"config key 'start_epoch' ({cfg.start_epoch}) is after 'epochs' "
         f"({cfg.epochs})")
    need(len(cfg.opt_betas) == 2 and all(0 <= b < 1 for b in cfg.opt_betas),
         f"config key 'opt_betas' must be two numbers in [0, 1), got {cfg.opt_betas}")
    minmax = cfg.cutmix_minmax
    # timm draws the box side from randint(min x size, max x size), which needs min < max
    need(minmax is None or (len(minmax) == 2 and 0 < minmax[0] < minmax[1] <= 1),
         f"config key 'cutmix_minmax' must be [min, max] with 0 < min < max <= 1, got {minmax}")
    need(cfg.sched != "step" or cfg.decay_epochs > 0,
         f"config key 'decay_epochs' must be > 0 for the step schedule, got {cfg.decay_epochs}")
    need(not (cfg.overwrite and cfg.resume), f"config keys 'overwrite' and 'resume' ({cfg.resume!r}) exclude "
         "each other: continue the run (resume) or start it again (overwrite)")
    need(cfg.is_dynamic_loss_scale or cfg.loss_scale > 0,
         "config key 'loss_scale' must be > 0 when 'is_dynamic_loss_scale' is false")
    need(cfg.decode_on == "cpu" or cfg.augment_on == "device", "config key 'decode_on: device' needs "
         "'augment_on: device' (a crop made on the device is augmented there too)")
    if cfg.distillation_type != "none":
        need(bool(cfg.teacher_model.strip()), f"distillation_type '{cfg.distillation_type}' needs a teacher: "
             "set 'teacher_model' (and 'teacher_path' to its weights file)")
    for split in ("train", "val"):
        n = getattr(cfg, f"{split}_num_samples")
        need(n == -1 or n > 0, f"config key '{split}_num_samples' must be -1 (all) or > 0, got {n}")
