"""The model card (``README.md``) of a hub folder, generated from what the checkpoint records.

Nothing in it is typed by hand: the architecture, its config and parameter count come from the model; the
class names, image counts, recipe (the run's config), epochs and final metrics from the checkpoint's
``meta`` (:mod:`vitzoo.checkpoint.state`; :meth:`vitzoo.engine.Trainer.meta` writes them); the versions
from the files. What a checkpoint does not record (a converted release file has no recipe) is said to be
not recorded, never guessed. The YAML front matter is the hub's (license, library_name, tags, datasets,
pipeline_tag; https://huggingface.co/docs/hub/model-cards).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from vitzoo.config.schema import schema
from vitzoo.models.convert.hub_out import data_config
from vitzoo.version import __version__

# the config sections that make the recipe (data paths, workers, output folders are the machine's, not the recipe's)
RECIPE_SECTIONS = ("model", "aug", "optim", "precision", "ema", "distill")
RECIPE_DATA_KEYS = ("dataset", "batch_size", "train_num_samples", "repeated_aug", "interpolation", "crop_pct")
_SKIP = ("compile", "channels_last", "grad_checkpointing", "start_epoch")  # speed / resume, not recipe
# readers whose data set is a public one, by its hub name (a folder of images could be anything)
HUB_DATASETS = {"cifar10": "cifar10", "cifar100": "cifar100"}
METRICS = (("Top1-Acc", "top-1 accuracy"), ("Top5-Acc", "top-5 accuracy"), ("Loss", "validation loss (CE)"))
SHOWN_CLASSES = 30
NOT_RECORDED = "not recorded in the checkpoint"


def render(model: nn.Module, meta: dict[str, Any], library: str, hub_class: str,
           numerics: dict[str, Any] | None = None) -> str:
    """The card's markdown: front matter, then model, data, recipe, results, usage and provenance.

    ``numerics``: what the target library computes with, where it is fixed (timm's LayerNorm eps and GELU);
    None when the folder's config carries the model's own."""
    return "\n".join([_front_matter(model, meta, library), f"# {model.arch}", "", _summary(model, meta, library, hub_class),
                      _model_section(model, data_config(model, meta), numerics or {}), _data_section(model, meta), _recipe_section(meta),
                      _results_section(meta), _usage_section(model, library), _provenance_section(meta)])


def _config(meta: dict[str, Any]) -> dict[str, Any]:
    return meta.get("config") if isinstance(meta.get("config"), dict) else {}


def _front_matter(model: nn.Module, meta: dict[str, Any], library: str) -> str:
    tags = ["image-classification", "vision-transformer", model.arch.split("_", 1)[0], "vitzoo"]
    if library == "timm":
        tags.insert(1, "timm")
    front: dict[str, Any] = {"license": meta.get("license") or "other", "library_name": library,
                             "pipeline_tag": "image-classification", "tags": tags}
    dataset = HUB_DATASETS.get(str(_config(meta).get("dataset", "")).lower())
    if dataset:
        front["datasets"] = [dataset]
    if any(k in (meta.get("metrics") or {}) for k, _ in METRICS):
        front["metrics"] = ["accuracy"]
    return "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n"


def _summary(model: nn.Module, meta: dict[str, Any], library: str, hub_class: str) -> str:
    params = sum(p.numel() for p in model.parameters())
    origin = "trained with vitzoo" if _config(meta) else f"weights read from {meta.get('source_layout') or 'a checkpoint'}"
    return (f"A {model.num_classes}-class image classifier, {model.arch} ({params:,} parameters), {origin}, "
            f"written for {library} ({hub_class}) by `vitzoo convert` {__version__}.\n")


def _numerics(eps: float, approximate: bool) -> str:
    return f"LayerNorm eps {eps}, {'tanh' if approximate else 'exact'} GELU"


def _model_section(model: nn.Module, dc: dict[str, Any], numerics: dict[str, Any]) -> str:
    cfg = model.cfg
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    overrides = ", ".join(f"{k}={v}" for k, v in sorted(model.model_kwargs.items())) or "none"
    _, h, w = dc["input_size"]
    crop_pct = float(dc.get("crop_pct") or 1.0)
    rows = [("architecture", f"`{model.arch}`"), ("config overrides", overrides),
            ("parameters", f"{params:,} ({trainable:,} trainable)"),
            ("width / depth / heads", f"{cfg.embed_dim} / {cfg.depth} / {cfg.num_heads}"),
            ("patch size", cfg.patch_size), ("input", f"{dc['input_size'][0]}x{h}x{w}"),
            ("eval preprocessing", (f"resize to {int(h / crop_pct)} ({h} / crop_pct {crop_pct}, "
                                    f"{dc.get('interpolation', '')}), centre crop {h}x{w}, "
                                    f"mean {list(dc['mean'])}, std {list(dc['std'])}")),
            ("numerics", _numerics(cfg.norm_eps, cfg.gelu_approximate))]
    target = (numerics.get("norm_eps", cfg.norm_eps), numerics.get("gelu_approximate", cfg.gelu_approximate))
    if target != (cfg.norm_eps, cfg.gelu_approximate):
        note = f"{_numerics(*target)} (the checkpoint's model: {rows[-1][1]}; `vitzoo convert` printed the logit change)"
        rows[-1] = ("numerics", note)
    return "## Model\n\n" + _table(rows)


def _data_section(model: nn.Module, meta: dict[str, Any]) -> str:
    names = list(meta.get("class_names") or [])
    config = _config(meta)
    lines = ["## Data", ""]
    if names:
        shown = ", ".join(f"`{n}`" for n in names[:SHOWN_CLASSES])
        more = f" and {len(names) - SHOWN_CLASSES} more (config.json lists all)" if len(names) > SHOWN_CLASSES else ""
        lines.append(f"- classes ({len(names)}): {shown}{more}")
    else:
        lines.append(f"- classes ({model.num_classes}): names {NOT_RECORDED}")
    counts = meta.get("num_images") if isinstance(meta.get("num_images"), dict) else {}
    counts = {split: n for split, n in counts.items() if isinstance(n, int)}
    if counts:
        lines.append("- images: " + ", ".join(f"{n:,} {split}" for split, n in counts.items()))
    else:
        lines.append(f"- images: {NOT_RECORDED}")
    if config.get("dataset"):
        lines.append(f"- reader: `{config['dataset']}`"
                     + (f", folder `{Path(str(config['data_path'])).name}`" if config.get("data_path") else ""))
    return "\n".join(lines) + "\n"


def _recipe_section(meta: dict[str, Any]) -> str:
    config = _config(meta)
    if not config:
        return f"## Training recipe\n\n{NOT_RECORDED.capitalize()}.\n"
    sections = {f.name: f.metadata["section"] for f in schema()}
    recipe = {k: v for k, v in config.items() if k not in _SKIP and
              (sections.get(k) in RECIPE_SECTIONS or k in RECIPE_DATA_KEYS)}
    if recipe.get("pretrained"):  # the starting weights by file name: the machine's folders stay private
        recipe["pretrained"] = Path(str(recipe["pretrained"])).name
    units = {"epoch": "epoch", "global_step": "optimizer step"}
    done = [f"{meta[k]:,} {unit}{'' if meta[k] == 1 else 's'}" for k, unit in units.items() if isinstance(meta.get(k), int)]
    head = f"Trained for {' / '.join(done)}" if done else "Trained"
    return (f"## Training recipe\n\n{head}; the run's config as the checkpoint records it (`vitzoo train "
            f"--config recipe.yaml` takes these keys):\n\n```yaml\n{yaml.safe_dump(recipe, sort_keys=False)}```\n")


def _results_section(meta: dict[str, Any]) -> str:
    metrics = meta.get("metrics") if isinstance(meta.get("metrics"), dict) else {}
    rows = [(label, _number(metrics[key], key != "Loss")) for key, label in METRICS if key in metrics]
    if not rows:
        return f"## Results\n\nValidation metrics: {NOT_RECORDED}.\n"
    where = f" after epoch {meta['epoch']}" if isinstance(meta.get("epoch"), int) else ""
    return f"## Results\n\nOn the run's validation set{where}, as the checkpoint records them:\n\n" + _table(rows)


def _usage_section(model: nn.Module, library: str) -> str:
    if library == "timm":
        code = ('import timm\n\nmodel = timm.create_model("hf-hub:USER/REPO", pretrained=True).eval()\n'
                'cfg = timm.data.resolve_data_config({}, model=model)\n'
                'transform = timm.data.create_transform(**cfg)')
    else:
        code = ('from transformers import AutoImageProcessor, AutoModelForImageClassification\n\n'
                'processor = AutoImageProcessor.from_pretrained("USER/REPO")\n'
                'model = AutoModelForImageClassification.from_pretrained("USER/REPO").eval()\n'
                'logits = model(**processor(images=image, return_tensors="pt")).logits')
    back = f"vitzoo reads this folder back: `vitzoo convert DIR {model.arch}.safetensors`."
    return f"## Use\n\n```python\n{code}\n```\n\n{back}\n"


def _provenance_section(meta: dict[str, Any]) -> str:
    rows = [("trained / saved by", f"vitzoo {meta['vitzoo_version']}"
                                   + (f", torch {meta['torch_version']}" if meta.get("torch_version") else ""))
            ] if meta.get("vitzoo_version") else []  # a foreign file: its layout is the source row's
    rows += [("converted by", f"vitzoo {__version__}, torch {torch.__version__}"),
            ("source", f"`{Path(str(meta['source'])).name}` ({meta.get('source_layout', '')})"
                       if meta.get("source") else NOT_RECORDED),
            ("weights", "EMA" if meta.get("use_ema") else "model")]
    if meta.get("converted_from"):
        rows.append(("originally converted from", f"`{Path(str(meta['converted_from'])).name}`"))
    return "## Provenance\n\n" + _table(rows)


def _number(value: Any, fraction: bool) -> str:
    v = float(value)
    return f"{v:.4f} ({100 * v:.2f}%)" if fraction else f"{v:.4f}"


def _table(rows: list[tuple[str, Any]]) -> str:
    body = "\n".join(f"| {k} | {str(v).replace('|', '/')} |" for k, v in rows)
    return f"| | |\n|---|---|\n{body}\n"
