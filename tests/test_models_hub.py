"""Weights by name, downloaded from a local server that answers as the Hugging Face hub and as release URLs.

Nothing here touches the network: ``HF_ENDPOINT`` points at :class:`hub_server.HubServer` on 127.0.0.1 and
every test tag's release URL is on the same server. The weights are tiny DeiTs written by the test.
"""
from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import pytest
import torch
from hub_server import ARCH, REPO, TAG, TINY, model_fixture, release_file, server_fixture  # noqa: F401 (fixtures)

from vitzoo import create_model
from vitzoo.errors import UserError
from vitzoo.models import hub, weights_table
from vitzoo.models.url_download import download_url, url_cache_path


def same_logits(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-6)


def test_first_download_then_cache_without_a_request(model, server, one_thread):
    loaded = create_model(TAG, pretrained=True, num_classes=10)  # sizes from the hub config, 32 px from the tag
    assert loaded.patch_embed.grid_size == (8, 8) and same_logits(loaded, model)
    assert any(p.endswith("/model.safetensors") for p in server.requests("GET"))
    server.log.clear()
    again = create_model(ARCH, pretrained=TAG, num_classes=10, img_size=32)
    assert same_logits(again, model) and server.requests() == []


def test_hub_repo_missing_falls_back_to_the_release_url(model, server, one_thread):
    del server.repos[REPO]
    loaded = create_model(TAG, pretrained=True, num_classes=10, **TINY)
    assert same_logits(loaded, model)
    assert server.requests("GET")[-1] == "/files/tiny.pth"


def test_pretrained_true_takes_the_default_tag(model, server, monkeypatch, one_thread):
    default = weights_table.default_tag(ARCH)
    monkeypatch.setitem(weights_table.TAGS, default.tag, dataclasses.replace(weights_table.TAGS[TAG], tag=default.tag))
    loaded = create_model(ARCH, pretrained=True, num_classes=10)
    assert same_logits(loaded, model)


def test_hf_hub_prefix_and_plain_url(model, server, one_thread):
    assert same_logits(create_model(ARCH, pretrained=f"hf-hub:{REPO}", num_classes=10, img_size=32), model)
    assert same_logits(create_model(ARCH, pretrained=f"hf-hub:{REPO}@main", num_classes=10, img_size=32), model)
    url = f"{server.url}/files/tiny.pth"
    assert same_logits(create_model(ARCH, pretrained=url, num_classes=10, img_size=32, **TINY), model)
    assert url_cache_path(url).is_file()


def test_offline_with_and_without_cache(model, server, monkeypatch, one_thread):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as err:
        create_model(TAG, pretrained=True, num_classes=10, **TINY)
    msg = str(err.value)
    url = f"{server.url}/files/tiny.pth"
    assert "\n" not in msg and url in msg and str(url_cache_path(url)) in msg  # the URL and where to put it
    assert server.requests() == []
    monkeypatch.delenv("HF_HUB_OFFLINE")
    create_model(TAG, pretrained=True, num_classes=10)  # fills the cache
    server.log.clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert same_logits(create_model(TAG, pretrained=True, num_classes=10), model)
    assert server.requests() == []


def test_hash_mismatch_removes_the_file(model, server, monkeypatch):
    url = f"{server.url}/files/tiny.pth"
    with pytest.raises(UserError, match="does not match the published deadbeef"):
        download_url(url, sha256="deadbeef")
    folder = url_cache_path(url).parent
    assert not any(p.name.endswith((".pth", ".part")) for p in folder.iterdir())


def test_transfer_cut_halfway_is_retried_then_refused(model, server):
    url = f"{server.url}/files/tiny.pth"
    server.cut["tiny.pth"] = 1  # cut once: the retry gets it
    assert download_url(url).read_bytes() == server.files["tiny.pth"]
    assert server.requests("GET").count("/files/tiny.pth") == 2
    server.files["other.pth"] = server.files["tiny.pth"]
    server.cut["other.pth"] = 99
    with pytest.raises(UserError, match="nothing was kept"):
        download_url(f"{server.url}/files/other.pth")
    folder = url_cache_path(f"{server.url}/files/other.pth").parent
    assert not (folder / "other.pth").exists() and not (folder / "other.pth.part").exists()


def test_404_is_one_line(server):
    with pytest.raises(UserError, match="HTTP 404"):
        download_url(f"{server.url}/files/missing.pth")
    with pytest.raises(UserError, match="no such repo"):
        create_model(ARCH, pretrained="hf-hub:nobody/nothing")


def test_private_repo_needs_a_token(model, server, monkeypatch, one_thread):
    server.private[REPO] = "secret-token"
    with pytest.raises(UserError, match="private.*HF_TOKEN"):
        create_model(ARCH, pretrained=f"hf-hub:{REPO}", num_classes=10)
    monkeypatch.setenv("HF_TOKEN", "secret-token")
    assert same_logits(create_model(ARCH, pretrained=f"hf-hub:{REPO}", num_classes=10, img_size=32), model)
    assert same_logits(create_model(ARCH, pretrained=f"hf-hub:{REPO}@main", num_classes=10, img_size=32), model)


@pytest.mark.parametrize("name", ["hf-hub:../../escape", "hf-hub:/etc/passwd", "hf-hub:org/../../x",
                                  "hf-hub:org/name/../../x", "hf-hub:org/name@../../../x", "hf-hub:org/name@/tmp/x"])
def test_repo_ids_that_climb_out_are_refused(server, tmp_path, name):
    with pytest.raises(UserError, match="not a hub repo id|not a revision"):
        create_model(ARCH, pretrained=name)
    assert server.requests() == []


@pytest.mark.parametrize("tail", ["..", "%2e%2e", "", "a%2F..%2F..%2Fx"])
def test_url_names_that_climb_out_are_refused(server, tail):
    with pytest.raises(UserError, match="file name"):
        download_url(f"{server.url}/files/{tail}")
    assert server.requests() == []


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_download",))


def test_a_downloaded_pickle_that_runs_code_is_refused(server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    buf = io.BytesIO()
    torch.save({"model": {"x": _RunsCode()}}, buf)
    server.files["evil.pth"] = buf.getvalue()
    with pytest.raises(UserError):
        create_model(ARCH, pretrained=f"{server.url}/files/evil.pth", **TINY)
    assert not (tmp_path / "pwned_by_download").exists()


def test_corrupt_hub_transfer_is_removed(model, server):
    server.corrupt.add("model.safetensors")
    with pytest.raises(UserError, match="does not match the hub's.*removed and nothing was loaded"):
        create_model(ARCH, pretrained=f"hf-hub:{REPO}", num_classes=10)
    assert not [p for p in Path(os.environ["HF_HUB_CACHE"]).rglob("*") if p.is_file() and p.stat().st_size > 10000]


def _fetch_both(url: str, queue) -> None:
    queue.put((str(hub.resolve(f"hf-hub:{REPO}")), str(download_url(url))))


def test_two_processes_download_once(model, server):
    """torchrun ranks asking for the same weights: one GET per file, the other rank waits on the lock."""
    import multiprocessing

    server.files["big.pth"] = os.urandom(1 << 20)
    server.slow.update({"big.pth", "model.safetensors"})
    url = f"{server.url}/files/big.pth"
    ctx = multiprocessing.get_context("fork")  # two processes at once; forked, so nothing is imported again
    queue = ctx.Queue()
    procs = [ctx.Process(target=_fetch_both, args=(url, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    assert results[0] == results[1] and results[0][1] == str(url_cache_path(url))
    assert server.requests("GET").count("/files/big.pth") == 1
    assert server.requests("GET").count(f"/{REPO}/resolve/main/model.safetensors") == 1


def test_names_without_weights_say_so():
    with pytest.raises(UserError, match="no published weights"):
        create_model("vit_tiny_patch16_224", pretrained=True)
    with pytest.raises(UserError, match="did you mean.*deit_small_patch16_224.fb_in1k"):
        create_model("deit_small_patch16_224.fb_in1kk", pretrained=True)
    assert hub.arch_of("t2t_vit_14.in1k_384") == "t2t_vit_14"
    assert hub.resolve_pretrained("t2t_vit_14.in1k_384", True, None) == ("t2t_vit_14", "t2t_vit_14.in1k_384", 384)


@pytest.mark.parametrize("fixture", ["hf_deit", "hf_vit_bin"])  # model.safetensors / pytorch_model.bin
def test_transformers_layout_repo_from_the_hub(server, fixture, one_thread):
    """A ``transformers`` repo (``facebook/deit-...`` layout) through ``hf-hub:``: the logits transformers
    itself gave for the fixture (tests/fixtures/convert, written by transformers 5.23.0)."""
    import numpy as np
    from test_convert_hf import ATOL, FIXTURES, fixed_input

    from vitzoo.models import load_model

    folder = FIXTURES / fixture
    server.repos[f"facebook-test/{fixture}"] = {p.name: p.read_bytes() for p in folder.iterdir()
                                                if p.name != "logits.npy"}
    loaded, _ = load_model(f"hf-hub:facebook-test/{fixture}")
    with torch.no_grad():
        got = loaded(fixed_input())
    torch.testing.assert_close(got, torch.from_numpy(np.load(folder / "logits.npy")), atol=ATOL, rtol=0)


def test_a_tag_brings_its_release_preprocessing(model, server, one_thread):
    loaded = create_model(TAG, pretrained=True, num_classes=10)
    tag = weights_table.TAGS[TAG]
    assert {k: loaded.data_config[k] for k in ("crop_pct", "mean", "std")} == {
        "crop_pct": tag.crop_pct, "mean": tag.mean, "std": tag.std}
