"""`vitzoo models`: the registry listing, its parameter counts and its filters (CPU, seconds)."""
from __future__ import annotations

from vitzoo.cli import main as cli


def test_models_lists_names_and_counts_params(capsys):
    from vitzoo import create_model

    assert cli(["models", "deit_tiny*", "--params"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("deit_tiny")}
    assert set(lines) == {"deit_tiny_patch16_224", "deit_tiny_distilled_patch16_224"}
    for name, line in lines.items():  # the meta-device count equals a real model's
        expected = sum(p.numel() for p in create_model(name).parameters())
        assert f"{expected:,}" in line.split()
    assert "192" in lines["deit_tiny_patch16_224"].split()  # embed_dim column
    assert "base" not in out


def test_models_substring_filter_and_no_match(capsys):
    assert cli(["models", "distilled"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines() if "_patch" in line]
    assert names and all("distilled" in n for n in names)
    assert cli(["models", "no_such_model_xyz"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no_such_model_xyz" in err


def test_models_shows_the_published_weights_of_each_name(capsys):
    """Every name's row ends with its tags and their top-1, from the weights table; '-' where none."""
    from vitzoo.models.weights_table import tags_for

    assert cli(["models", "t2t_vit_14"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("t2t_vit_14")}
    for name, line in lines.items():
        tags = tags_for(name)
        if not tags:
            assert line.rstrip().endswith("-"), line
        for tag in tags:
            assert f"{tag.tag.split('.', 1)[1]} {tag.top1:g}" in line, (name, tag.tag)
    assert any(tags_for(name) for name in lines) and not all(tags_for(name) for name in lines)
