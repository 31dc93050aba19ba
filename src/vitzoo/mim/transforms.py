"""The pre-training views of an image (unilm beit/datasets.py ``DataAugmentationForBEiT``, written afresh).

One random crop of the image is resized twice: to the ViT's input (normalised, the "patches" view) and to
the tokenizer's smaller input (pixels in [0, 1], the "visual tokens" view; each tokenizer maps them as it
needs, DALL-E's ``map_pixels`` included). Colour jitter and a flip come first, so both views show the same
content. The block mask is drawn here, per image, inside the sample's seeded augmentation, so it is
reproducible with any number of loader workers and after a resume. Returns ``(patches, view, mask)``;
the pixels target needs no second view, and gets an empty tensor in its place.
"""
from __future__ import annotations

import torch
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from vitzoo.config import RunConfig
from vitzoo.data.transforms import ToRGB, decode_shrunk, resized_crop
from vitzoo.mim.masking import BlockMaskGenerator

_MODES = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
          "lanczos": InterpolationMode.LANCZOS, "nearest": InterpolationMode.NEAREST}
_NO_VIEW = torch.zeros(0)


class MIMTransform:
    """PIL image -> (patches (3, S, S) normalised, tokenizer view (3, s, s) in [0, 1] or empty, mask (h, w)).

    ``opens_lazily``: a dataset of files hands it JPEGs undecoded; one that the crop shrinks 4x or more
    decodes at a reduced scale (``data.transforms.decode_shrunk``, as the classification recipe's crop).
    """

    opens_lazily = True

    def __init__(self, cfg: RunConfig, data_config: dict, grid: tuple[int, int], second_size: int | None,
                 train: bool = True):
        self.size = int(data_config["input_size"][-1])
        self.second_size = second_size
        self.train = train
        self.interpolation = _MODES.get(data_config["interpolation"], InterpolationMode.BICUBIC)
        self.second_interpolation = _MODES[cfg.second_interpolation]
        jitter = [T.ColorJitter(cfg.color_jitter, cfg.color_jitter, cfg.color_jitter)] if cfg.color_jitter else []
        flip = [T.RandomHorizontalFlip(cfg.hflip)] if cfg.hflip else []
        self.common = T.Compose([ToRGB(), *jitter, *flip]) if train else ToRGB()
        self.scale = (cfg.min_crop, 1.0)
        self.normalize = T.Normalize(data_config["mean"], data_config["std"])
        self.masks = BlockMaskGenerator.from_ratio(grid, cfg.mask_ratio, cfg.min_mask_patches,
                                                   cfg.max_mask_patches, cfg.mask_aspect)

    def _crop_box(self, img) -> tuple[int, int, int, int]:
        if self.train:  # timm's RandomResizedCrop draws (python random, as unilm's two-picture crop)
            return RandomResizedCropAndInterpolation.get_params(img, self.scale, (3 / 4, 4 / 3))
        w, h = img.size  # evaluation: the largest centred square
        side = min(w, h)
        return (h - side) // 2, (w - side) // 2, side, side

    def __call__(self, img) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # The box is drawn from python's random, the jitter and flip from torch's: drawing it first, on the
        # header's size, gives the same numbers, and lets a large JPEG decode at a reduced scale (for the
        # larger view) before the jitter runs on it. A box drawn on the flipped image fits it (same size).
        full_size = img.size
        box = self._crop_box(img)
        img = self.common(decode_shrunk(img, min(box[2], box[3]) / self.size))
        patches = resized_crop(img, full_size, box, (self.size, self.size), self.interpolation)
        view = _NO_VIEW
        if self.second_size:
            view = TF.to_tensor(resized_crop(img, full_size, box, (self.second_size,) * 2,
                                             self.second_interpolation))
        return self.normalize(TF.to_tensor(patches)), view, self.masks()

    def __repr__(self) -> str:
        return (f"MIMTransform(size={self.size}, second_size={self.second_size}, train={self.train}, "
                f"masks={self.masks.num_masked} of {self.masks.height}x{self.masks.width})")
