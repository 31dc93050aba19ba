"""Weights by name: one table of tags (timm's ``model.tag``), each with its sources and published numbers.

Data only (DESIGN rule 17). Each :class:`Tag` records where its file is (the Hugging Face hub repo first,
the release URL second), the hash the release publishes, the ImageNet-1k top-1 / top-5 the release or timm
reports, the eval preprocessing and the license, with the source of each number in ``cite``. Nothing here
is measured by vitzoo or guessed: a field the sources do not give is None ("not published").

Sources (read 2026-12-07):
  [timm]   timm 1.0.31 ``timm/models/{deit,beit,vision_transformer,regnet}.py`` ``default_cfgs``: hub ids
           (``hf_hub_id='timm/'`` = the repo ``timm/<tag>``), release URLs, input size, crop_pct,
           interpolation, mean/std, num_classes, license.
  [timm-results]  huggingface/pytorch-image-models ``results/results-imagenet.csv`` (commit 0173a13):
           timm's own ImageNet-1k val top-1 / top-5 for tags whose release gives none.
  [deit]   facebookresearch/deit ``README_deit.md``: URLs and the ``Acc@1 / Acc@5`` each ``main.py --eval``
           prints. The 8 hex digits in a DeiT file name are the start of its sha256 (torch.hub's
           ``check_hash`` convention), so they are the published hash.
  [t2t]    yitu-opensource/T2T-ViT ``README.md`` (e362efb): release URLs and top-1; ``models/t2t_vit.py``
           ``_cfg``: crop_pct .9, bicubic, ImageNet mean/std; ``LICENSE``: The Clear BSD License.
  [beit]   microsoft/unilm ``beit/README.md``: URLs and acc@1 / acc@5 of the fine-tuned checkpoints;
           ``beit/get_started_for_image_classification.md``: fine-tuning layer decay (0.85 base / 0.9 large from
           the 22k-fine-tuned checkpoints, 0.65 base / 0.75 large from the self-supervised ones).
"""
from __future__ import annotations

from dataclasses import dataclass

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm IMAGENET_DEFAULT_*
HALF = (0.5, 0.5, 0.5)  # timm IMAGENET_INCEPTION_* (ViT, BEiT)


@dataclass(frozen=True)
class Tag:
    """One set of published weights. ``hub`` is a repo id (``timm/<tag>``) whose folder vitzoo reads
    (``config.json`` beside ``model.safetensors``); ``url`` the release file, read by its layout."""

    tag: str                      # "<arch>.<weights>", as timm names them
    url: str | None               # the release file (None: the release is on the hub only)
    hub: str | None               # Hugging Face repo id, tried first (None: no hub copy)
    sha256: str | None            # published sha256 (or its published prefix); None = not published
    top1: float | None            # ImageNet-1k val top-1 (%); None for a checkpoint without a 1k head
    top5: float | None
    license: str
    cite: str                     # where the URL, hash and numbers above come from
    input_size: int = 224
    crop_pct: float = 0.9
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    num_classes: int = 1000
    size: int | None = None       # bytes; none of the sources above publish one
    layer_decay: float | None = None  # the release's fine-tuning layer decay (BEiT), what `vitzoo train` uses

    @property
    def arch(self) -> str:
        return self.tag.split(".", 1)[0]

    @property
    def hub_weights(self) -> str:
        return "model.safetensors"  # beside config.json: timm's hub layout (timm.models.push_to_hub)


_FB = "https://dl.fbaipublicfiles.com/deit/"
_T2T = "https://github.com/yitu-opensource/T2T-ViT/releases/download/main/"
_UNILM = "https://unilm.blob.core.windows.net/beit/"
_AUGREG = "https://storage.googleapis.com/vit_models/augreg/"
_DEIT_CITE = ("URL, hash, acc: [deit] README_deit.md; crop 0.875: [deit] main.py --eval-crop-ratio default, "
              "with which README's accuracies were measured (timm's cfg: 0.9 / 1.0); hub, mean/std, license: "
              "[timm] deit.py")


def _deit(arch: str, file: str, top1: float, top5: float, size: int = 224) -> Tag:
    return Tag(f"{arch}.fb_in1k", _FB + file, f"timm/{arch}.fb_in1k", file.rsplit("-", 1)[1].split(".")[0],
               top1, top5, "apache-2.0", _DEIT_CITE, input_size=size, crop_pct=0.875)


def _t2t(arch: str, file: str, top1: float, top5: float | None = None, size: int = 224, tag: str = "in1k") -> Tag:
    return Tag(f"{arch}.{tag}", _T2T + file, None, None, top1, top5, "bsd-3-clause-clear",
               "URL, top-1: [t2t] README.md model tables; crop, mean/std: [t2t] models/t2t_vit.py _cfg; "
               "license: [t2t] LICENSE (The Clear BSD License)", input_size=size,
               crop_pct=0.9)


def _beit(arch: str, tag: str, file: str, top1: float | None, top5: float | None, hub: bool = True,
          num_classes: int = 1000) -> Tag:
    size = int(arch.rsplit("_", 1)[1])
    large = "large" in arch
    decay = (0.75 if large else 0.65) if tag == "in22k" else (0.9 if large else 0.85)
    return Tag(f"{arch}.{tag}", _UNILM + file, f"timm/{arch}.{tag}" if hub else None, None, top1, top5,
               "apache-2.0", "URL, acc: [beit] README.md; layer decay: [beit] "
               "get_started_for_image_classification.md; hub, crop, mean/std, license: [timm] beit.py",
               input_size=size, crop_pct=0.9 if size == 224 else 1.0, mean=HALF, std=HALF,
               num_classes=num_classes, layer_decay=decay)


def _vit(tag: str, url: str | None, top1: float | None, top5: float | None, size: int = 224,
         num_classes: int = 1000) -> Tag:
    return Tag(tag, url, f"timm/{tag}", None, top1, top5, "apache-2.0",
               "hub, URL, crop, mean/std, license: [timm] vision_transformer.py; "
               + ("acc: [timm-results]" if top1 else "no ImageNet-1k head: no top-1"),
               input_size=size, crop_pct=0.9 if size == 224 else 1.0, mean=HALF, std=HALF,
               num_classes=num_classes)


# Order matters: an architecture's first tag is its default (create_model(name, pretrained=True)), as
# the first entry of timm's default_cfgs is.
_TAGS: tuple[Tag, ...] = (
    # DeiT (arXiv:2012.12877): the 8 models of the seeds; Acc@1 / Acc@5 as README_deit.md's eval prints them
    _deit("deit_tiny_patch16_224", "deit_tiny_patch16_224-a1311bcf.pth", 72.202, 91.124),
    _deit("deit_small_patch16_224", "deit_small_patch16_224-cd65a155.pth", 79.854, 94.968),
    _deit("deit_base_patch16_224", "deit_base_patch16_224-b5f2ef4d.pth", 81.846, 95.594),
    _deit("deit_base_patch16_384", "deit_base_patch16_384-8de9b5d1.pth", 82.890, 96.222, size=384),
    _deit("deit_tiny_distilled_patch16_224", "deit_tiny_distilled_patch16_224-b40b3cf7.pth", 74.476, 91.920),
    _deit("deit_small_distilled_patch16_224", "deit_small_distilled_patch16_224-649709d9.pth", 81.164, 95.376),
    _deit("deit_base_distilled_patch16_224", "deit_base_distilled_patch16_224-df68dfff.pth", 83.372, 96.482),
    _deit("deit_base_distilled_patch16_384", "deit_base_distilled_patch16_384-d0272ac0.pth", 85.224, 97.186,
          size=384),
    # DeiT's distillation teacher (README_deit.md: --teacher-model regnety_160 --teacher-path <this URL>);
    # its accuracy from timm's results at timm's test size 288 (regnet.py _cfg test_input_size)
    Tag("regnety_160.deit_in1k", _FB + "regnety_160-a5fe301d.pth", "timm/regnety_160.deit_in1k", "a5fe301d",
        83.690, 96.782, "apache-2.0", "URL, hash: [deit] README_deit.md; hub, crop, license: [timm] regnet.py; "
        "acc (at 288 px): [timm-results]", crop_pct=0.95),
    # T2T-ViT (arXiv:2101.11986): the 11 released ImageNet files; top-5 only where the README prints it
    _t2t("t2t_vit_7", "71.7_T2T_ViT_7.pth.tar", 71.7),
    _t2t("t2t_vit_10", "75.2_T2T_ViT_10.pth.tar", 75.2),
    _t2t("t2t_vit_12", "76.5_T2T_ViT_12.pth.tar", 76.5),
    _t2t("t2t_vit_14", "81.5_T2T_ViT_14.pth.tar", 81.5, 95.666),  # README's validation log: Acc@5 95.666
    _t2t("t2t_vit_14", "83.3_T2T_ViT_14.pth.tar", 83.3, size=384, tag="in1k_384"),
    _t2t("t2t_vit_19", "81.9_T2T_ViT_19.pth.tar", 81.9),
    _t2t("t2t_vit_24", "82.3_T2T_ViT_24.pth.tar", 82.3),
    _t2t("t2t_vit_24", "84.2_T2T_ViT_24.pth.tar", 84.2, tag="tl_in1k"),  # trained with Token Labeling
    _t2t("t2t_vit_t_14", "81.7_T2T_ViTt_14.pth.tar", 81.7),
    _t2t("t2t_vit_t_19", "82.4_T2T_ViTt_19.pth.tar", 82.4),
    _t2t("t2t_vit_t_24", "82.6_T2T_ViTt_24.pth.tar", 82.6),
    # BEiT (arXiv:2106.08254): pre-trained on 22k, intermediate fine-tuned on 22k, then on 1k (timm's tags)
    _beit("beit_base_patch16_224", "in22k_ft_in22k_in1k", "beit_base_patch16_224_pt22k_ft22kto1k.pth",
          85.2, 97.6),
    _beit("beit_base_patch16_384", "in22k_ft_in22k_in1k", "beit_base_patch16_384_pt22k_ft22kto1k.pth",
          86.8, 98.1),
    _beit("beit_large_patch16_224", "in22k_ft_in22k_in1k", "beit_large_patch16_224_pt22k_ft22kto1k.pth",
          87.4, 98.3),
    _beit("beit_large_patch16_384", "in22k_ft_in22k_in1k", "beit_large_patch16_384_pt22k_ft22kto1k.pth",
          88.4, 98.6),
    _beit("beit_large_patch16_512", "in22k_ft_in22k_in1k", "beit_large_patch16_512_pt22k_ft22kto1k.pth",
          88.60, 98.66),
    _beit("beit_base_patch16_224", "in22k_ft_in1k", "beit_base_patch16_224_pt22k_ft1k.pth", 83.7, 96.6,
          hub=False),
    _beit("beit_large_patch16_224", "in22k_ft_in1k", "beit_large_patch16_224_pt22k_ft1k.pth", 86.0, 97.6,
          hub=False),
    _beit("beit_base_patch16_224", "in22k_ft_in22k", "beit_base_patch16_224_pt22k_ft22k.pth", None, None,
          num_classes=21841),
    _beit("beit_large_patch16_224", "in22k_ft_in22k", "beit_large_patch16_224_pt22k_ft22k.pth", None, None,
          num_classes=21841),
    # self-supervised only (no classifier): where BEiT fine-tuning starts
    _beit("beit_base_patch16_224", "in22k", "beit_base_patch16_224_pt22k.pth", None, None, hub=False,
          num_classes=0),
    _beit("beit_large_patch16_224", "in22k", "beit_large_patch16_224_pt22k.pth", None, None, hub=False,
          num_classes=0),
    # ViT-B/16 (arXiv:2010.11929; augreg: arXiv:2106.10270)
    _vit("vit_base_patch16_224.augreg2_in21k_ft_in1k", None, 85.096, 97.530),
    _vit("vit_base_patch16_224.augreg_in21k_ft_in1k", _AUGREG + "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0"
         "-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_224.npz", 84.532, 97.292),
    _vit("vit_base_patch16_384.augreg_in21k_ft_in1k", _AUGREG + "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0"
         "-sd_0.0--imagenet2012-steps_20k-lr_0.01-res_384.npz", 85.996, 98.002, size=384),
    # the ImageNet-21k checkpoint the ViT seed fine-tunes on CIFAR-10 (Google .npz; 21843 classes)
    _vit("vit_base_patch16_224.augreg_in21k",
         _AUGREG + "B_16-i21k-300ep-lr_0.001-aug_medium1-wd_0.1-do_0.0-sd_0.0.npz", None, None, num_classes=21843),
)

TAGS: dict[str, Tag] = {t.tag: t for t in _TAGS}


def default_tag(arch: str) -> Tag | None:
    """The first tag listed for ``arch`` (what ``pretrained=True`` loads), or None when it has none."""
    return next((t for t in TAGS.values() if t.arch == arch), None)


def tags_for(arch: str) -> list[Tag]:
    return [t for t in TAGS.values() if t.arch == arch]


def find_tag(name: str) -> Tag | None:
    """``name`` as a full tag, or an architecture with a default tag; None otherwise."""
    return TAGS.get(name) or (default_tag(name) if "." not in name else None)
