"""Values more than one layer needs, stated once (data preprocessing, model defaults, file layouts)."""
from __future__ import annotations

# ImageNet statistics (torchvision / timm IMAGENET_DEFAULT_MEAN/STD): DeiT, T2T-ViT.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Google ViT and BEiT normalise to [-1, 1] (timm IMAGENET_INCEPTION_MEAN/STD).
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)

# Keys under which release files and training scripts wrap a state dict, most specific first:
# DeiT/timm/BEiT {"model"}, BEiT {"module"}, T2T-ViT {"state_dict", "state_dict_ema"}, timm {"model_ema"}.
STATE_DICT_WRAPPERS = ("model", "module", "state_dict", "model_state", "net")
EMA_WRAPPERS = ("state_dict_ema", "model_ema")
