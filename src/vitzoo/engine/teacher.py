"""The frozen teacher for DeiT distillation: any model of this zoo, of timm, or of torchvision.

DeiT's paper teacher is timm's ``regnety_160`` (arXiv:2012.12877 sec. 5.2); any classifier works as
long as it predicts the student's classes. Weights come from a file, a weights tag
(``regnety_160.deit_in1k``, DeiT's own teacher), ``hf-hub:org/repo`` or a URL (downloaded and cached by
:func:`vitzoo.models.hub.resolve`): a vitzoo checkpoint, an official release file of a zoo model, a timm hub
folder, or a plain / wrapped state dict, always loaded with ``weights_only=True`` or safetensors. The teacher
is put in eval mode with gradients off.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from vitzoo.checkpoint import load_checkpoint
from vitzoo.errors import UserError, nearest
from vitzoo.models import create_model, list_models
from vitzoo.models.convert import unwrap_state_dict
from vitzoo.models.convert.hub import hub_folder, read_hub_weights
from vitzoo.models.hub import resolve


def _plain_state_dict(obj: dict, path: str) -> dict[str, torch.Tensor]:
    """The state dict inside common checkpoint wrappers, DDP's 'module.' prefix stripped."""
    try:
        return unwrap_state_dict(obj)
    except UserError as e:  # "no tensors found (expected a state dict; top-level keys: ...)"
        raise UserError(f"teacher_path: {path}: {e}") from e


def _zoo_names() -> list[str]:
    return list(list_models())


def build_model_by_name(name: str, num_classes: int) -> tuple[nn.Module, str]:
    """(model with random weights, source) for a zoo / timm / torchvision name."""
    zoo = _zoo_names()
    if name in zoo:
        return create_model(name, num_classes=num_classes), "vitzoo"
    import timm

    if timm.is_model(name):
        return timm.create_model(name, pretrained=False, num_classes=num_classes), "timm"
    import torchvision

    tv = torchvision.models.list_models()
    if name in tv:
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes), "torchvision"
    raise UserError(f"teacher_model: unknown model {name!r} (not in vitzoo, timm or torchvision)"
                    f"{nearest(name, zoo + list(timm.list_models()) + tv)}")


def build_teacher(name: str, path: str, num_classes: int, device: torch.device | str = "cpu") -> nn.Module:
    """Build ``name``, load ``path`` (required: training against a random teacher is meaningless)."""
    if not name:
        raise UserError("teacher_model: distillation needs a teacher model name (e.g. regnety_160)")
    if not path:
        raise UserError(f"teacher_path: distillation needs the weights of teacher {name!r} (a file or a tag, "
                        "e.g. regnety_160.deit_in1k)")
    path = resolve(path)  # a tag, hf-hub: repo or URL -> the cached file / hub folder
    if not Path(path).exists():
        raise UserError(f"teacher_path: file not found: {path}")
    if name in _zoo_names():
        # the zoo handles its own checkpoints and the official release layouts (weights_only)
        teacher = create_model(name, num_classes=num_classes, pretrained=path)
    else:
        teacher, _ = build_model_by_name(name, num_classes)

        sd = read_hub_weights(path)[0] if hub_folder(path) else _plain_state_dict(load_checkpoint(path), path)
        try:
            teacher.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            first = str(e).strip().splitlines()[:2]
            raise UserError(f"teacher_path: {path} does not fit teacher {name!r} with {num_classes} classes: "
                            f"{' '.join(first)}") from e
    teacher.to(device).eval()
    teacher.requires_grad_(False)
    return teacher
