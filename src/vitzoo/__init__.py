"""vitzoo: a model zoo and toolkit for vision transformers (ViT, DeiT, T2T-ViT, BEiT)."""
from vitzoo.models import create_model, list_models

__version__ = "0.1.0"
__all__ = ["__version__", "create_model", "list_models"]
