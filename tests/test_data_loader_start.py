"""Loader.start_workers: a validation loader's workers fork before training grows the heap (issue 30, 6).

The primed pass must give exactly the batches of an ordinary pass (its prefetched batches are used, not
dropped), later passes too; and the trainer starts the validation workers before the first training step
on a CPU. The speed itself is measured by benchmarks/bench_train_loop.py, not here.
"""
from __future__ import annotations

import torch

from vitzoo.config import load_config
from vitzoo.data.loader import build_loader


class _Numbers(torch.utils.data.Dataset):
    def __init__(self) -> None:
        self.bad_files: dict[str, str] = {}

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int):
        return torch.full((2,), float(i)), i


def _loader(workers: int):
    cfg = load_config(None, ["--batch_size", "4", "--num_workers", str(workers), "--persistent_workers", "true"])
    return build_loader(cfg, _Numbers(), "val")


def _labels(loader) -> list[list[int]]:
    return [y.tolist() for _, y in loader]


def test_primed_pass_reads_the_same_batches(one_thread):
    expected = _labels(_loader(0))
    loader = _loader(1)
    loader.start_workers()
    workers = loader._iterator._workers
    assert workers and all(w.is_alive() for w in workers)  # forked now, before any pass
    assert _labels(loader) == expected  # the primed pass: nothing dropped, nothing twice
    assert _labels(loader) == expected and loader._iterator._workers == workers  # the same workers again
    loader.start_workers()  # already started: nothing changes
    assert _labels(loader) == expected


def test_start_workers_without_workers_is_a_no_op():
    loader = _loader(0)
    loader.start_workers()
    assert loader._iterator is None and _labels(loader) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_trainer_starts_validation_workers_before_training(tmp_path, monkeypatch, one_thread):
    from vitzoo.data import make_shapes_dataset
    from vitzoo.data.loader import Loader
    from vitzoo.engine import loop
    from vitzoo.engine.trainer import train

    data = make_shapes_dataset(tmp_path / "ds", 8, 4, size=32, seed=0, num_classes=2, progress=False)
    events: list[str] = []
    start, fb = Loader.start_workers, loop._forward_backward

    def record_start(self):
        events.append(f"start {self.drop_last}")  # (drop_last: the train loader's, never the val one's)
        start(self)

    def record_step(*a, **k):
        events.append("step")
        return fb(*a, **k)

    monkeypatch.setattr(Loader, "start_workers", record_start)
    monkeypatch.setattr(loop, "_forward_backward", record_step)
    cfg = load_config(None, ["--model", "deit_tiny_patch16_224", "--model_overrides",
                             "{patch_size: 8, embed_dim: 48, depth: 1, num_heads: 3}", "--input_size", "32",
                             "--data_path", str(data), "--output_dir", str(tmp_path / "run"), "--epochs", "1",
                             "--batch_size", "4", "--num_workers", "1", "--device", "cpu", "--warmup_epochs", "0"])
    train(cfg)
    assert events[0] == "start False" and events.count("step") == 2
