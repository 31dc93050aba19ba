"""The model zoo: ViT, DeiT (+ distilled), T2T-ViT and BEiT behind one registry."""
from vitzoo.models.registry import create_model, get_entry, list_models, model_fields
from vitzoo.models.weights import load_model, load_pretrained

__all__ = ["create_model", "get_entry", "list_models", "load_model", "load_pretrained", "model_fields"]
