"""`vitzoo train-tokenizer`: a VQ-VAE / dVAE trained on generated images, its file, pictures and errors.

Tiny settings (64 images of 32 px, width 8, 2-4 epochs) so the file runs in seconds on a shared CPU.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from vitzoo.cli import main as vitzoo_main
from vitzoo.cli.train_tokenizer import main as train_tokenizer_main
from vitzoo.data import make_shapes_dataset
from vitzoo.errors import UserError
from vitzoo.tokenizers import create_tokenizer
from vitzoo.tokenizers import train as train_module
from vitzoo.tokenizers.task import code_stats, temperature
from vitzoo.tokenizers.vqvae import TokenizerSpec, TrainedTokenizer, load_trained_tokenizer

TINY = ["--input_size", "32", "--tokenizer_width", "8", "--codebook_size", "32", "--batch_size", "16",
        "--num_workers", "0", "--device", "cpu", "--lr", "3e-3", "--warmup_epochs", "0", "--min_crop", "0.5"]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes", 64, 5, size=32, progress=False)


@pytest.fixture(scope="module")
def runs(shapes, tmp_path_factory):
    """One short run per tokenizer type (module-scoped: the assertions below share them)."""
    torch.set_num_threads(1)  # tiny convs on a shared 2-core machine: one thread is faster
    out = {}
    for kind, epochs in (("vqvae", 4), ("dvae", 3)):
        folder = tmp_path_factory.mktemp(kind)
        assert train_tokenizer_main(["--data_path", str(shapes), "--tokenizer_type", kind, "--epochs", str(epochs),
                                     "--output_dir", str(folder), *TINY]) == 0
        out[kind] = folder
    return out


def _history(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ["vqvae", "dvae"])
def test_run_learns_and_writes_its_files(runs, kind):
    folder = runs[kind]
    rows = _history(folder)
    assert [r["epoch"] for r in rows] == list(range(1, len(rows) + 1))
    assert rows[-1]["recon_mse"] < rows[0]["recon_mse"]  # the reconstruction improves
    assert rows[-1]["codes_used"] > 4 and rows[-1]["perplexity"] > 2  # not collapsed onto a handful
    assert all(0 < r["codebook_usage"] <= 1 for r in rows)
    pictures = sorted((folder / "reconstructions").glob("epoch_*.png"))
    assert [p.name for p in pictures] == [f"epoch_{i:03d}.png" for i in range(1, len(rows) + 1)]
    assert (folder / "train.log").read_text().count("recon_mse") == len(rows)


@pytest.mark.parametrize("kind", ["vqvae", "dvae"])
def test_file_reloads_to_the_same_tokens(runs, kind):
    path = runs[kind] / "tokenizer.safetensors"
    tok = create_tokenizer("tokenizer", weights=str(path))
    again = load_trained_tokenizer(path)
    assert tok.spec == TokenizerSpec(type=kind, codebook_size=32, width=8, downsample=8, image_size=32)
    images = torch.rand(3, 3, 48, 64)  # any multiple of 8, not only the training size
    ids = tok.tokenize(images)
    assert ids.shape == (3, 6, 8) and ids.dtype == torch.long
    assert 0 <= int(ids.min()) and int(ids.max()) < tok.vocab_size == 32
    assert torch.equal(ids, again.tokenize(images))
    assert tok.logits(images).shape == (3, 32, 6, 8)
    decoded = tok.decode(ids)
    assert decoded.shape == images.shape and 0 <= float(decoded.min()) and float(decoded.max()) <= 1
    assert not any(p.requires_grad for p in tok.parameters()) and not tok.training


def test_vqvae_tokens_are_the_quantisers_choice(runs):
    tok = load_trained_tokenizer(runs["vqvae"] / "tokenizer.safetensors")
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        _, ids, _ = tok.quantizer(tok.encoder(images * 2 - 1))
    assert torch.equal(ids, tok.tokenize(images))


def test_finished_run_and_resume(runs, shapes, capsys):
    folder = runs["vqvae"]
    args = ["--data_path", str(shapes), "--output_dir", str(folder), *TINY]
    with pytest.raises(UserError, match="already holds a run .*--resume auto.*--overwrite"):
        train_tokenizer_main([*args, "--epochs", "4"])
    assert train_tokenizer_main([*args, "--epochs", "4", "--resume", "auto"]) == 0
    assert "nothing to do" in capsys.readouterr().out


def test_resume_continues_exactly(shapes, tmp_path, monkeypatch):
    """A run killed in epoch 3 of 3 and resumed == the same run uninterrupted (weights and metrics)."""
    args = ["--data_path", str(shapes), *TINY, "--tokenizer_type", "dvae", "--train_num_samples", "32",
            "--epochs", "3"]
    assert train_tokenizer_main([*args, "--output_dir", str(tmp_path / "a")]) == 0
    save_pictures = train_module.save_pictures

    def killed_in_epoch_3(model, fixed, path):
        if path.name == "epoch_003.png":
            raise KeyboardInterrupt
        return save_pictures(model, fixed, path)

    monkeypatch.setattr(train_module, "save_pictures", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_tokenizer_main([*args, "--output_dir", str(tmp_path / "b")])
    monkeypatch.setattr(train_module, "save_pictures", save_pictures)
    assert len(_history(tmp_path / "b")) == 2
    assert train_tokenizer_main([*args, "--output_dir", str(tmp_path / "b"), "--resume", "auto"]) == 0
    a, b = (load_trained_tokenizer(tmp_path / x / "tokenizer.safetensors") for x in "ab")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6), name
    assert [r["recon_mse"] for r in _history(tmp_path / "a")] == pytest.approx(
        [r["recon_mse"] for r in _history(tmp_path / "b")], rel=1e-5)


def test_errors_are_one_line(shapes, tmp_path, capsys):
    def fails(argv):
        assert vitzoo_main(["train-tokenizer", *TINY, "--output_dir", str(tmp_path / "o"), *argv]) != 0
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err
        return err

    assert "data_path" in fails([])
    assert "not found" in fails(["--data_path", str(tmp_path / "nowhere")])
    assert "multiple of 8" in fails(["--data_path", str(shapes), "--input_size", "30"])
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    torch.save({"w": torch.zeros(2)}, tmp_path / "foreign.pth")
    for path, words in ((tmp_path / "missing.safetensors", "not found"), (foreign, "not a train-tokenizer file"),
                        (tmp_path / "foreign.pth", "not a train-tokenizer file")):
        with pytest.raises(UserError, match=words) as e:
            create_tokenizer("tokenizer", weights=str(path))
        assert "\n" not in str(e.value)


def test_help_and_dry_run_show_tokenizer_defaults(capsys):
    with pytest.raises(SystemExit):
        train_tokenizer_main(["--help"])
    text = capsys.readouterr().out
    assert "tokenizer_type" in text and "reconstructions/epoch_NNN.png" in text and "--resume auto" in text
    assert train_tokenizer_main(["--dry-run", "--lr", "2e-4"]) == 0
    dumped = capsys.readouterr().out
    assert "input_size: 112" in dumped and "lr: 0.0002" in dumped and "epochs: 20" in dumped


def test_helpers():
    assert temperature(0, 100) == pytest.approx(1.0) and temperature(100, 100) == pytest.approx(1 / 16)
    assert code_stats(torch.tensor([5, 5, 0, 0])) == (2, pytest.approx(2.0))
    tok = TrainedTokenizer(TokenizerSpec(codebook_size=16, width=4))
    with pytest.raises(UserError, match="multiples of 8"):
        tok.tokenize(torch.rand(1, 3, 20, 20))
