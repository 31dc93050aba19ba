"""vitzoo: a model zoo and toolkit for vision transformers (ViT, DeiT, T2T-ViT, BEiT)."""
from vitzoo.models import create_model, list_models, load_model
from vitzoo.tokenizers import create_tokenizer
from vitzoo.version import __version__

__all__ = ["__version__", "create_model", "create_tokenizer", "list_models", "load_model"]
