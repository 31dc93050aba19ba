"""The README's commands run as written and print what it quotes (issue 13, item 8).

The commands of the README's ``bash`` blocks run in order, in process, in a temporary folder standing in
for the repository (``configs/`` linked into it), on a reduced demo: :data:`REDUCED` lists the only
changes (fewer images, one epoch, no loader workers). A ``# ...`` line under a command is output the README
quotes: the command must print a line of that shape (numbers and shape names may differ on the reduced
demo, the text around them may not). A plain block right after a one-command ``bash`` block is that
command's exact output. Commands that need what this repository does not ship (GPUs, official release
files) or that time things are listed in :data:`NOT_RUN` with the reason; any other line fails the test,
so a new README command is either run here or skipped on purpose.
"""
from __future__ import annotations

import contextlib
import glob
import io
import os
import re
import shlex
from pathlib import Path

from vitzoo.cli import main as vitzoo
from vitzoo.cli.models import count_params
from vitzoo.data import SHAPES

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")

# the reduced demo: (README text, replacement) applied to each command, and flags appended per command
REDUCED = [("--num-train 2000 --num-val 500", "--num-train 40 --num-val 15"),
           ("--num-train 3000 --num-val 500", "--num-train 40 --num-val 20")]
SHORT = ["--epochs", "1", "--batch_size", "8", "--num_workers", "0"]
APPENDED = {"train": SHORT, "pretrain": SHORT, "train-tokenizer": SHORT,
            "eval": ["--num_workers", "0"], "eval-onnx": ["--num-workers", "0"],
            "linprobe": ["--num_workers", "0", "--probe_epochs", "2"], "knn": ["--num_workers", "0"]}
NOT_RUN = {
    "make ": "sets up the environment this test runs in",
    "bash scripts/": "GPU wrappers around torchrun: tests/test_scripts.py runs them with a stand-in",
    "torchrun ": "several processes: tests/test_train.py and test_eval_infer.py run torchrun",
    "vitzoo convert ": "needs the official release files, which are not shipped",
    ".venv/bin/python benchmarks/": "timings, not a check",
    "vitzoo bench ": "timings, not a check (tests/test_bench.py runs it on a small input)",
}
NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"
WORDS = "|".join(SHAPES)


def readme_blocks() -> list[tuple[str, str]]:
    """(language, text) of each fenced block, in order."""
    return re.findall(r"^```(\w*)\n(.*?)^```", README, flags=re.MULTILINE | re.DOTALL)


def readme_commands() -> list[tuple[str, list[str], str | None]]:
    """(command, quoted output lines, exact output or None) in README order."""
    blocks = readme_blocks()
    found: list[tuple[str, list[str], str | None]] = []
    for i, (lang, text) in enumerate(blocks):
        if lang != "bash":
            continue
        for line in text.splitlines():
            if line.startswith("# ") and found:
                found[-1][1].append(line[2:])
            elif line.strip() and not line.startswith("#"):
                found.append((re.sub(r"\s+#\s.*$", "", line).strip(), [], None))
        exact = blocks[i + 1][1] if i + 1 < len(blocks) and blocks[i + 1][0] == "" else None
        if exact is not None and README.find(f"```\n```\n{exact}") >= 0:  # the very next block
            found[-1] = (found[-1][0], found[-1][1], exact)
    return found


def shape_of(quoted: str) -> re.Pattern:
    """A quoted output line as a pattern: its numbers and shape names may vary, the rest may not."""
    parts = re.split(rf"({NUMBER}|\b(?:{WORDS})\b)", quoted)
    regex = "".join(NUMBER if re.fullmatch(NUMBER, p) else f"(?:{WORDS})" if p in SHAPES else re.escape(p)
                    for p in parts if p)
    return re.compile(regex)


def as_run(command: str, ckpt: str) -> list[str]:
    """The argv a README command runs with on the reduced demo."""
    for text, reduced in REDUCED:
        command = command.replace(text, reduced)
    argv = [ckpt if a == "$CKPT" else a for a in shlex.split(command)][1:]  # drop "vitzoo"
    if "--dry-run" not in argv:
        argv += APPENDED.get(argv[0], [])
    return argv


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = vitzoo(argv)
    return code, out.getvalue()


def check(command: str, argv: list[str], quotes: list[str], exact: str | None, code: int, output: str) -> None:
    assert code == 0, f"README command failed: {command}\n{output}"
    lines = [line.rstrip() for line in output.splitlines()]
    for quoted in quotes:
        pattern = shape_of(quoted)
        assert any(pattern.fullmatch(line) for line in lines), \
            f"{command}: no output line shaped like the README's\n  {quoted}\noutput:\n{output}"
    if exact is not None:
        assert output.strip() == exact.strip(), f"{command}: output differs from the README's block"


def run_readme(folder: Path) -> list[str]:
    """Run the README's commands in order in ``folder``, checking each; return those run."""
    done: list[str] = []
    ckpt = ""
    with contextlib.chdir(folder):
        for command, quotes, exact in readme_commands():
            if command.startswith("CKPT=$(ls "):
                found = glob.glob(command.removeprefix("CKPT=$(ls ").removesuffix(")"))
                assert len(found) == 1, found
                ckpt = found[0]
                continue
            if any(command.startswith(prefix) for prefix in NOT_RUN):
                continue
            assert command.startswith("vitzoo "), f"README command the test does not know: {command}"
            argv = as_run(command, ckpt)
            check(command, argv, quotes, exact, *run(argv))
            done.append(command)
    return done


def test_readme_commands_run_as_written(tmp_path):
    """~40 s: the reduced demo trains 1-epoch runs (classifier, tokenizer, pre-training), then every command
    uses their checkpoints."""
    (tmp_path / "configs").symlink_to(ROOT / "configs")  # the README's paths are the repository's
    done = run_readme(tmp_path)
    assert {c.split()[1] for c in done} == {"make-dataset", "train", "eval", "infer", "export", "eval-onnx",
                                            "infer-onnx", "attention", "plot", "models", "train-tokenizer",
                                            "pretrain", "linprobe", "knn"}
    assert (tmp_path / "attn.png").is_file() and (tmp_path / "curves.png").is_file()
    assert (tmp_path / "pretrain_curves.png").is_file() and (tmp_path / "knn.json").is_file()


def test_readme_python_example_runs():
    code = next(text for lang, text in readme_blocks() if lang == "python")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert tuple(namespace["logits"].shape) == (2, 10) and len(namespace["maps"]) == 6


def expand_names(cell: str) -> list[str]:
    """``vit_tiny_patch16_224 / _384`` -> both names: each later part replaces as many trailing
    ``_``-parts of the first name as it has (``t2t_vit_t_14 / t_19``, ``t2t_vit_7 / 10``)."""
    first, *others = [part.strip() for part in cell.split("/")]
    names = [first]
    for other in others:
        parts = other.lstrip("_").split("_")
        names.append("_".join(first.split("_")[: -len(parts)] + parts))
    return names


def test_readme_model_table_counts_are_what_vitzoo_models_prints():
    table = README.split("The zoo in one table", 1)[1].split("\n\n", 2)[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert len(rows) >= 15
    for name_cell, _family, _input, params_cell, *_ in rows:
        names = expand_names(name_cell)
        counts = [int(c.replace(",", "")) for c in params_cell.split("/")]
        assert len(names) == len(counts), name_cell
        for name, count in zip(names, counts):
            assert count_params(name)[0] == count, name


def test_readme_states_the_durations_it_promises():
    assert "`make bench` times two models against their references in about a minute" in README
    assert "make bench FULL=1" in README
    assert os.path.isfile(ROOT / "benchmarks" / "bench_models.py")
