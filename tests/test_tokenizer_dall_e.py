"""The DALL-E dVAE encoder tokenizer: parity with openai's ``dall-e`` package and the safe pickle reader.

The fixtures in ``tests/fixtures/dall_e`` were written by ``make_fixtures.py`` with the ``dall-e`` package
itself (a small ``dall_e.encoder.Encoder`` pickled with ``torch.save``, both formats, and its logits on
three images); these tests need no ``dall_e``. The last test repeats the check against the package when it
is importable.
"""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import vitzoo
from vitzoo.cli import main
from vitzoo.errors import UserError
from vitzoo.tokenizers.dall_e import DalleEncoder, DalleSpec, load_dall_e, save_dall_e
from vitzoo.tokenizers.dall_e_pickle import LEGACY_MAGIC, LEGACY_PROTOCOL, read_dall_e_pickle

FIXTURES = Path(__file__).parent / "fixtures" / "dall_e"
PICKLES = {"zip": FIXTURES / "encoder_small.pkl", "legacy": FIXTURES / "encoder_small_legacy.pkl"}
SMALL = DalleSpec(n_hid=8, n_blk_per_group=2, vocab_size=128)


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURES / "reference.safetensors"))


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out.strip(), out.err.strip()


@pytest.mark.parametrize("fmt", sorted(PICKLES))
def test_converted_pickle_matches_dall_e(fmt, reference, tmp_path, capsys):
    dst = tmp_path / "dall_e_encoder.safetensors"
    code, out, _ = run_cli(["convert", str(PICKLES[fmt]), str(dst)], capsys)
    assert code == 0 and len(out.splitlines()) == 1
    assert "DALL-E encoder pickle" in out and "vocab 128" in out and "46,116 parameters" in out
    tok = vitzoo.create_tokenizer("dall-e", weights=str(dst))
    assert not tok.training and not any(p.requires_grad for p in tok.parameters())
    with torch.no_grad():
        logits = tok.logits(reference["images"])
    assert (logits - reference["logits"]).abs().max() <= 1e-5
    ids = tok.tokenize(reference["images"])
    assert ids.shape == (3, 32 // 8, 48 // 8) and torch.equal(ids, reference["ids"])


def test_both_formats_give_dall_e_key_names():
    zip_sd, legacy_sd = (read_dall_e_pickle(str(p)) for p in (PICKLES["zip"], PICKLES["legacy"]))
    assert list(zip_sd) == list(legacy_sd) and all(torch.equal(zip_sd[k], legacy_sd[k]) for k in zip_sd)
    ours = DalleEncoder(SMALL).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in zip_sd.items()}
    assert "blocks.group_2.block_1.id_path.w" in zip_sd and "blocks.group_1.block_1.id_path.w" not in zip_sd


def test_plain_state_dict_loads_and_converts(reference, tmp_path, capsys):
    state = read_dall_e_pickle(str(PICKLES["zip"]))
    torch.save(state, tmp_path / "encoder.pth")
    tok = vitzoo.create_tokenizer("dall-e", weights=str(tmp_path / "encoder.pth"))
    assert torch.equal(tok.tokenize(reference["images"]), reference["ids"])
    code, out, _ = run_cli(["convert", str(tmp_path / "encoder.pth"), str(tmp_path / "t.safetensors")], capsys)
    assert code == 0 and "DALL-E encoder state dict" in out
    assert torch.equal(load_dall_e(tmp_path / "t.safetensors").tokenize(reference["images"]), reference["ids"])


def test_small_encoder_round_trips_with_its_hyper_parameters(tmp_path):
    model = DalleEncoder(DalleSpec(n_hid=4, n_blk_per_group=1, vocab_size=32)).eval()
    save_dall_e(tmp_path / "tiny.safetensors", model)
    back = load_dall_e(tmp_path / "tiny.safetensors")
    x = torch.rand(2, 3, 16, 24)
    assert back.spec == model.spec and torch.equal(back.logits(x), model.logits(x))
    assert back.tokenize(x).shape == (2, 2, 3) and back.downsample == 8


def test_random_init_is_the_released_size():
    tok = vitzoo.create_tokenizer("dall-e")
    assert tok.vocab_size == 8192 and tok.spec == DalleSpec()
    assert tok.blocks.output.conv.w.shape == (8192, 2048, 1, 1) and not tok.blocks.input.b.any()


# --------------------------------------------------------------------- nothing from a pickle runs
def evil_pickle(marker: Path) -> bytes:
    """A protocol-2 pickle of a dall_e Encoder whose state holds ``os.system("touch MARKER")``."""
    cmd = f"touch {marker}".encode()
    return (b"\x80\x02cdall_e.encoder\nEncoder\n)\x81}X\x08\x00\x00\x00_modules"
            + b"cposix\nsystem\nX" + len(cmd).to_bytes(4, "little") + cmd + b"\x85Rsb.")


def as_zip_archive(path: Path, data_pkl: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", data_pkl)
    return path


def as_legacy_stream(path: Path, main_pkl: bytes) -> Path:
    header = [LEGACY_MAGIC, LEGACY_PROTOCOL, {"protocol_version": LEGACY_PROTOCOL, "little_endian": True}]
    path.write_bytes(b"".join(pickle.dumps(h, protocol=2) for h in header) + main_pkl)
    return path


@pytest.mark.parametrize("wrap", [as_zip_archive, as_legacy_stream])
def test_malicious_pickle_is_refused_and_nothing_runs(wrap, tmp_path, capsys):
    marker = tmp_path / "pwned"
    src = wrap(tmp_path / "encoder.pkl", evil_pickle(marker))
    code, out, err = run_cli(["convert", str(src), str(tmp_path / "out.safetensors")], capsys)
    assert code == 2 and not out and len(err.splitlines()) == 1
    assert str(src) in err and "posix.system" in err and "nothing in it was run" in err
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_unknown_class_is_refused(tmp_path, capsys):
    src = as_zip_archive(tmp_path / "decoder.pkl", b"\x80\x02cdall_e.decoder\nDecoder\n)\x81.")
    code, _, err = run_cli(["convert", str(src), str(tmp_path / "out.safetensors")], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "dall_e.decoder.Decoder" in err


@pytest.mark.parametrize("case", ["missing", "wrong_keys", "wrong_shapes", "pickle_not_converted", "truncated"])
def test_bad_files_give_one_clear_line(case, tmp_path, capsys):
    state = read_dall_e_pickle(str(PICKLES["zip"]))
    path = tmp_path / "encoder.pth"
    if case == "wrong_keys":
        state.pop("blocks.group_3.block_2.res_path.conv_2.w")
        torch.save(state, path)
    elif case == "wrong_shapes":
        state["blocks.group_3.block_2.res_path.conv_2.w"] = torch.zeros(4, 4, 3, 3)
        torch.save(state, path)
    elif case == "pickle_not_converted":
        path = PICKLES["zip"]
    elif case == "truncated":
        path = tmp_path / "encoder.pkl"
        path.write_bytes(PICKLES["legacy"].read_bytes()[:5000])
    with pytest.raises(UserError) as e:
        vitzoo.create_tokenizer("dall-e", weights=str(path)) if case != "truncated" else read_dall_e_pickle(str(path))
    message = str(e.value)
    assert len(message.splitlines()) == 1 and str(path) in message
    expected = {"missing": "not found", "wrong_keys": "res_path.conv_2.w", "wrong_shapes": "size mismatch",
                "pickle_not_converted": "a pickled dall_e module; convert it once", "truncated": "not a readable"}[case]
    assert expected in message


def test_input_must_be_images_with_sides_multiple_of_8():
    tok = DalleEncoder(DalleSpec(n_hid=4, n_blk_per_group=1, vocab_size=16))
    with pytest.raises(UserError, match="multiples of 8"):
        tok.tokenize(torch.rand(1, 3, 20, 24))


# ------------------------------------------------------------- against the reference, when installed
def test_matches_the_dall_e_package_when_installed(tmp_path):
    dall_e_encoder = pytest.importorskip("dall_e.encoder")
    dall_e_utils = pytest.importorskip("dall_e.utils")
    torch.manual_seed(1)
    ref = dall_e_encoder.Encoder(n_hid=64, n_blk_per_group=1, vocab_size=512)
    torch.save(ref, tmp_path / "encoder.pkl")
    ours = DalleEncoder(DalleSpec(n_hid=64, n_blk_per_group=1, vocab_size=512))
    ours.load_state_dict(read_dall_e_pickle(str(tmp_path / "encoder.pkl")))
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected, got = ref(dall_e_utils.map_pixels(x)), ours.logits(x)
    assert (got - expected).abs().max() <= 1e-5 and torch.equal(got.argmax(1), expected.argmax(1))
