"""The weights table against its sources: every seed model has a tag; hub ids, URLs and preprocessing agree
with timm's own pretrained configs (installed timm 1.0.31); DeiT's published hashes are its file names'."""
from __future__ import annotations

import re

import pytest
import timm

from vitzoo.models import list_models
from vitzoo.models.weights_table import TAGS, default_tag

SEED_MODELS = [  # the seeds' model tables (MindSpore DeiT / T2T-ViT / BEiT / ViT, PaddleViT DeiT) + the teacher
    "deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224", "deit_base_patch16_384",
    "deit_tiny_distilled_patch16_224", "deit_small_distilled_patch16_224", "deit_base_distilled_patch16_224",
    "deit_base_distilled_patch16_384", "t2t_vit_19", "t2t_vit_t_14", "beit_base_patch16_224",
    "beit_base_patch16_384", "beit_large_patch16_224", "beit_large_patch16_384", "vit_base_patch16_224",
    "regnety_160",
]


@pytest.mark.parametrize("arch", SEED_MODELS)
def test_every_seed_model_has_a_cited_tag(arch):
    tag = default_tag(arch)
    assert tag is not None and tag.cite and (tag.hub or tag.url)
    assert arch in list_models() or arch == "regnety_160"


def test_every_t2t_release_is_in_the_table():
    t2t = [t for t in TAGS.values() if t.arch.startswith("t2t_vit")]
    assert len(t2t) == 11 and all(t.url.startswith("https://github.com/yitu-opensource/T2T-ViT/releases/") for t in t2t)
    assert all(t.sha256 is None for t in t2t)  # the release publishes no hash: said so, not made up


@pytest.mark.parametrize("tag", [t for t in TAGS.values() if t.hub], ids=lambda t: t.tag)
def test_hub_tags_agree_with_timm(tag):
    """``timm/<tag>`` exists in timm's default_cfgs, with the same release URL and eval preprocessing."""
    assert tag.hub == f"timm/{tag.tag}"
    cfg = timm.models.get_pretrained_cfg(tag.tag)
    assert cfg is not None and cfg.hf_hub_id in ("timm/", tag.hub)
    if cfg.url:
        assert cfg.url == tag.url
    assert (cfg.input_size[-1], cfg.interpolation) == (tag.input_size, tag.interpolation)
    if tag.tag.startswith("deit_"):  # DeiT's README accuracies: main.py's eval crop ratio, not timm's crop_pct
        assert (cfg.crop_pct, tag.crop_pct) == (0.9 if tag.input_size == 224 else 1.0, 0.875)
    else:
        assert cfg.crop_pct == tag.crop_pct
    assert (tuple(cfg.mean), tuple(cfg.std), cfg.num_classes) == (tag.mean, tag.std, tag.num_classes)
    assert cfg.license == tag.license


def test_deit_hashes_are_the_file_names():
    for tag in TAGS.values():
        if tag.url and tag.url.startswith("https://dl.fbaipublicfiles.com/deit/"):
            assert re.search(rf"-{tag.sha256}\.pth$", tag.url), tag.tag
        elif tag.sha256 is not None:
            pytest.fail(f"{tag.tag}: a hash without a published source")


def test_numbers_are_percentages_and_sizes_registered():
    for tag in TAGS.values():
        for v in (tag.top1, tag.top5):
            assert v is None or 50 < v < 100
        assert tag.top5 is None or tag.top1 is not None
        if tag.arch in list_models():
            assert tag.input_size % 16 == 0
