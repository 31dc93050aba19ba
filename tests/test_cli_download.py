"""`vitzoo download` (fill the cache, copy it to an offline machine) and `vitzoo models --pretrained`."""
from __future__ import annotations

import shutil

import pytest
from hub_server import ARCH, TAG, model_fixture, server_fixture  # noqa: F401 (fixtures)

from vitzoo import create_model
from vitzoo.cli import main as vitzoo
from vitzoo.models.weights_table import TAGS


def test_download_then_copy_the_cache_to_an_offline_machine(model, server, tmp_path, monkeypatch, capsys,
                                                           one_thread):
    url = f"{server.url}/files/tiny.pth"
    assert vitzoo(["download", TAG, url]) == 0
    out = capsys.readouterr().out
    assert f"{TAG}: " in out and "cache: " in out
    shutil.copytree(tmp_path / "cache", tmp_path / "copied")  # what a user rsyncs to the cluster
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "copied"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    server.log.clear()
    loaded = create_model(TAG, pretrained=True, num_classes=10)
    again = create_model(ARCH, pretrained=url, num_classes=10, img_size=32, patch_size=4, embed_dim=32, depth=2,
                         num_heads=2)
    assert loaded.num_classes == again.num_classes == 10
    assert server.requests() == []


def test_download_refuses_unknown_names(server, capsys):
    assert vitzoo(["download", "deit_small_patch16_224.nope"]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fb_in1k" in err
    assert vitzoo(["download"]) != 0


def test_models_pretrained_lists_tags_with_numbers(capsys):
    assert vitzoo(["models", "--pretrained"]) == 0
    out = capsys.readouterr().out
    rows = {r.split()[0]: r.split() for r in out.splitlines() if r.split() and r.split()[0] in TAGS}
    assert set(rows) >= {"deit_small_patch16_224.fb_in1k", "t2t_vit_t_14.in1k", "regnety_160.deit_in1k",
                         "beit_base_patch16_224.in22k_ft_in22k_in1k", "vit_base_patch16_224.augreg2_in21k_ft_in1k"}
    assert rows["deit_small_patch16_224.fb_in1k"][1:4] == ["79.854", "94.968", "224"]
    assert len(rows) == len(TAGS)


def test_models_pretrained_params_gflops_and_markdown(capsys):
    assert vitzoo(["models", "deit_small_patch16_224", "--pretrained", "--params"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("deit_small_patch16_224."))
    assert line.split()[-2:] == ["22.1", "4.6"]  # DeiT's Table 1: 22M parameters, 4.6 GFLOPs
    assert vitzoo(["models", "t2t_vit_14", "--pretrained", "--markdown"]) == 0
    md = capsys.readouterr().out.splitlines()
    assert md[0].startswith("| tag | top-1") and any(r.startswith("| t2t_vit_14.in1k_384 | 83.3") for r in md)


@pytest.mark.parametrize("arch", ["deit_tiny_patch16_224", "beit_base_patch16_224", "t2t_vit_t_14",
                                  "vit_base_patch16_224"])
def test_models_pretrained_lists_the_default_tag_first(arch, capsys):
    assert vitzoo(["models", arch, "--pretrained"]) == 0
    first = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(arch + "."))
    assert first.split()[0] == f"{arch}.{TAGS_DEFAULT[arch]}"


TAGS_DEFAULT = {"deit_tiny_patch16_224": "fb_in1k", "beit_base_patch16_224": "in22k_ft_in22k_in1k",
                "t2t_vit_t_14": "in1k", "vit_base_patch16_224": "augreg2_in21k_ft_in1k"}
