"""The run state on disk: RunState round trip, format version and migration, naming and rotation."""
from __future__ import annotations

import pytest
import torch

from vitzoo.checkpoint import (
    FORMAT_VERSION,
    CheckpointStore,
    RunFolders,
    RunState,
    load_checkpoint,
    load_run_state,
    save_checkpoint,
    store,
)
from vitzoo.checkpoint.files import write_torch
from vitzoo.checkpoint.store import best_name, ckpt_name, list_best, list_checkpoints
from vitzoo.config import load_config
from vitzoo.errors import UserError


def _state(epoch: int = 1, step: int = 10, batch: int = 0, train: bool = True) -> RunState:
    model = {"w": torch.arange(6.0).view(2, 3)}
    extra = {"optimizer": {"state": {}, "param_groups": []}, "scheduler": {"num_updates": step},
             "rng": {"torch": torch.get_rng_state()}} if train else {}
    return RunState(model=model, meta={"arch": "deit_tiny_patch16_224", "config": {"lr": 1e-3}}, epoch=epoch,
                    global_step=step, step_in_epoch=batch, metrics={"Top1-Acc": 0.5}, **extra)


def test_run_state_round_trip(tmp_path):
    path = save_checkpoint(tmp_path / "a.pth", _state(epoch=2, step=17, batch=3))
    back = load_run_state(path)
    assert (back.epoch, back.global_step, back.step_in_epoch) == (2, 17, 3)
    assert torch.equal(back.model["w"], torch.arange(6.0).view(2, 3)) and back.metrics == {"Top1-Acc": 0.5}
    meta = load_checkpoint(path)["meta"]
    assert meta["format_version"] == FORMAT_VERSION and meta["kind"] == "train"


def test_weights_only_file_cannot_resume(tmp_path):
    path = save_checkpoint(tmp_path / "w.pth", _state(train=False))
    assert load_checkpoint(path)["meta"]["kind"] == "weights"
    with pytest.raises(UserError, match="not a full vitzoo training checkpoint.*--pretrained"):
        load_run_state(path)
    st = save_checkpoint(tmp_path / "w.safetensors", _state())  # safetensors never holds training state
    assert load_checkpoint(st)["meta"]["kind"] == "weights"


def test_version_1_file_is_migrated(tmp_path):
    """A file as vitzoo 0.1 wrote it (format_version 1: no 'kind'; a config with the keys since removed)."""
    payload = _state().to_payload()
    meta = {k: v for k, v in payload["meta"].items() if k != "kind"}
    meta.update(format="vitzoo", format_version=1, config={"lr": 1e-3, "resplit": False, "dist_eval": True})
    write_torch(tmp_path / "v1.pth", {**payload, "meta": meta})
    obj = load_checkpoint(tmp_path / "v1.pth")
    assert obj["meta"]["format_version"] == FORMAT_VERSION and obj["meta"]["kind"] == "train"
    assert obj["meta"]["config"] == {"lr": 1e-3}
    assert load_run_state(tmp_path / "v1.pth").global_step == 10
    write_torch(tmp_path / "v1w.pth", {"model": payload["model"], "meta": {"format": "vitzoo", "epoch": 3}})
    assert load_checkpoint(tmp_path / "v1w.pth")["meta"]["kind"] == "weights"


def test_newer_format_is_refused(tmp_path):
    payload = _state().to_payload()
    write_torch(tmp_path / "v9.pth", {**payload, "meta": {**payload["meta"], "format": "vitzoo", "format_version": 9}})
    with pytest.raises(UserError, match="newer vitzoo.*format 9"):
        load_checkpoint(tmp_path / "v9.pth")


def test_store_keeps_newest_and_best(tmp_path):
    folders = RunFolders.of(load_config(None, ["--output_dir", str(tmp_path)]))
    assert folders.checkpoints == tmp_path / "checkpoints" and folders.best == tmp_path / "best"
    store = CheckpointStore(folders, keep=2, keep_best=2)
    for step in (5, 10, 15):
        store.save(_state(epoch=step // 5, step=step))
    assert [p.name for p in list_checkpoints(folders.checkpoints)] == [ckpt_name(2, 10), ckpt_name(3, 15)]
    assert store.find_resume("auto").name == ckpt_name(3, 15)
    for top1, step in ((0.5, 5), (0.7, 10), (0.6, 15), (0.4, 20)):
        store.save_if_best(_state(step=step), top1)
    assert [t for t, _ in list_best(folders.best)] == [0.7, 0.6]
    assert store.best()[1].name == best_name(0.7, 1, 10)


def test_run_folders_follow_seed_root_dirs(tmp_path):
    cfg = load_config(None, ["--output_dir", str(tmp_path), "--ckpt_root_dir", str(tmp_path / "c"),
                             "--summary_root_dir", str(tmp_path / "s")])
    folders = RunFolders.of(cfg)
    assert (folders.checkpoints, folders.tensorboard, folders.logs) == (tmp_path / "c", tmp_path / "s", tmp_path)


def test_checkpoint_naming_and_rotation(tmp_path):
    for step in (3, 12, 7, 20):
        (tmp_path / store.ckpt_name(step // 10, step)).write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("not a checkpoint")
    assert [p.name for p in store.list_checkpoints(tmp_path)][-1] == store.ckpt_name(2, 20)
    store.prune(store.list_checkpoints(tmp_path), 2)
    assert [p.name for p in store.list_checkpoints(tmp_path)] == [store.ckpt_name(1, 12), store.ckpt_name(2, 20)]
    assert store.find_resume("auto", tmp_path).name == store.ckpt_name(2, 20)
    assert store.find_resume("auto", tmp_path / "none") is None and store.find_resume("", tmp_path) is None
    for top1, e in ((0.5, 1), (0.7, 2), (0.6, 3)):
        (tmp_path / store.best_name(top1, e, e * 10)).write_bytes(b"x")
    store.prune_best(tmp_path, 2)
    assert [t for t, _ in store.list_best(tmp_path)] == [0.7, 0.6]
    assert store.is_better(0.65, tmp_path, 2) and not store.is_better(0.55, tmp_path, 2)
