"""The model zoo: ViT, DeiT (+ distilled), T2T-ViT and BEiT behind one registry.

``create_model(name, pretrained=FILE)`` and ``load_model(FILE)`` come from :mod:`vitzoo.models.convert`,
which reads every checkpoint layout and builds on :mod:`vitzoo.models.registry` (never the reverse).
"""
from vitzoo.models.convert import create_model, load_model, load_pretrained
from vitzoo.models.registry import get_entry, list_models

__all__ = ["create_model", "get_entry", "list_models", "load_model", "load_pretrained"]
