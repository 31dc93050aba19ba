"""The documentation's commands run as written and print what they quote (README.md and docs/*.md).

Every shell block (```bash, ```sh, ```console) either runs here or says, in an HTML comment on the line just
before it, what it needs: ``<!-- needs: slow -->``, ``<!-- needs: gpu, download -->`` (:data:`NEEDS` lists the
words and what each means). Unmarked blocks run in the default suite and must stay cheap (help, listings,
small generated data). Blocks marked ``slow`` and nothing else (they train) run under ``make test-slow``.

A file's blocks run in order, in process, in a temporary folder standing for the repository (``configs/``
linked into it), on a reduced demo: :data:`REDUCED` and :data:`APPENDED` are the only changes (fewer images,
one epoch, no loader workers). ``VAR=$(ls GLOB)`` sets ``$VAR`` to the one file GLOB matches. A ``# ...`` line
under a command is output the document quotes: the command must print a line of that shape (numbers and shape
names may differ on the reduced demo, the text around them may not). A plain block right after a one-command
shell block is that command's exact output. Any other line fails the test, so a new documented command is
either run here or marked on purpose.
"""
from __future__ import annotations

import contextlib
import glob
import importlib
import importlib.util
import io
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vitzoo.cli import COMMANDS
from vitzoo.cli import main as vitzoo
from vitzoo.cli.models import count_params
from vitzoo.data import SHAPES

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MAX_README_LINES = 250

SHELL = {"bash", "sh", "console", "shell"}
NEEDS = {
    "slow": "trains or runs for minutes: run by `make test-slow` (pytest -m slow)",
    "gpu": "a CUDA GPU (and torchrun's processes): tests/test_scripts.py runs the wrappers with a stand-in",
    "download": "files this repository does not ship (official weights, ImageNet, other packages)",
    "bench": "timings, not a check (tests/test_bench.py runs vitzoo bench on a small input)",
    "setup": "sets up the environment this test runs in (make)",
}

# the reduced demo: (document text, replacement) applied to each command, and flags appended per command
REDUCED = [("--num-train 2000 --num-val 500", "--num-train 40 --num-val 15"),
           ("--num-train 3000 --num-val 500", "--num-train 40 --num-val 20")]
SHORT = ["--epochs", "1", "--batch_size", "8", "--num_workers", "0"]
APPENDED = {"train": SHORT, "pretrain": SHORT, "train-tokenizer": SHORT,
            "demo": ["--num-train", "40", "--num-val", "15", *SHORT],
            "eval": ["--num_workers", "0"], "eval-onnx": ["--num-workers", "0"],
            "linprobe": ["--num_workers", "0", "--probe_epochs", "2"], "knn": ["--num_workers", "0"]}
NUMBER = r"-?\d+(?:\.\d+)?(?:e-?\d+)?"
WORDS = "|".join(SHAPES)
FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
MARKER = re.compile(r"<!--\s*needs:([^>]*?)-->")


@dataclass
class Command:
    text: str
    quotes: list[str] = field(default_factory=list)
    exact: str | None = None


@dataclass
class Block:
    doc: str  # file name relative to the repository
    lang: str
    text: str
    needs: frozenset[str]
    exact: str | None = None  # the plain block right after it

    def commands(self) -> list[Command]:
        found: list[Command] = []
        for line in self.text.splitlines():
            if line.startswith("# ") and found:
                found[-1].quotes.append(line[2:])
            elif line.strip() and not line.startswith("#"):
                found.append(Command(re.sub(r"\s+#\s.*$", "", line).strip()))
        if self.exact is not None and len(found) == 1:
            found[0].exact = self.exact
        return found


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of a markdown file, each with the needs marked just before it."""
    text = path.read_text(encoding="utf-8")
    name = str(path.relative_to(ROOT))
    found: list[Block] = []
    previous_end = -1
    for match in FENCE.finditer(text):
        lang, body = match.group(1), match.group(2)
        before = text[:match.start()].rstrip()
        marker = MARKER.search(before[before.rfind("\n") + 1:]) if before.endswith("-->") else None
        needs = frozenset(w.strip() for w in marker.group(1).split(",")) if marker else frozenset()
        if lang == "" and found and found[-1].lang in SHELL and not text[previous_end:match.start()].strip():
            found[-1].exact = body
        found.append(Block(name, lang, body, needs))
        previous_end = match.end()
    return found


ALL_BLOCKS = {path.name: blocks_of(path) for path in DOCS}


def shape_of(quoted: str) -> re.Pattern:
    """A quoted output line as a pattern: its numbers and shape names may vary, the rest may not."""
    parts = re.split(rf"({NUMBER}|\b(?:{WORDS})\b)", quoted)
    regex = "".join(NUMBER if re.fullmatch(NUMBER, p) else f"(?:{WORDS})" if p in SHAPES else re.escape(p)
                    for p in parts if p)
    return re.compile(regex)


def as_run(command: str, variables: dict[str, str]) -> list[str]:
    """The argv a documented command runs with on the reduced demo."""
    for text, reduced in REDUCED:
        command = command.replace(text, reduced)
    argv = [variables.get(a[1:], a) if a.startswith("$") else a for a in shlex.split(command)][1:]
    if argv and "--dry-run" not in argv:
        argv += APPENDED.get(argv[0], [])
    return argv


def run(argv: list[str]) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            code = vitzoo(argv)
        except SystemExit as stop:  # argparse's --help
            code = stop.code or 0
    return code, out.getvalue()


def check(command: Command, code: int, output: str) -> None:
    assert code == 0, f"documented command failed: {command.text}\n{output}"
    lines = [line.rstrip() for line in output.splitlines()]
    for quoted in command.quotes:
        pattern = shape_of(quoted)
        assert any(pattern.fullmatch(line) for line in lines), \
            f"{command.text}: no output line shaped like the document's\n  {quoted}\noutput:\n{output}"
    if command.exact is not None:
        assert output.strip() == command.exact.strip(), f"{command.text}: output differs from the document's block"


def run_blocks(blocks: list[Block], folder: Path) -> list[str]:
    """Run the blocks' commands in order in ``folder``, checking each; return those run."""
    done: list[str] = []
    variables: dict[str, str] = {}
    with contextlib.chdir(folder):
        for block in blocks:
            for command in block.commands():
                assignment = re.fullmatch(r"(\w+)=\$\(ls (\S+)\)", command.text)
                if assignment:
                    found = glob.glob(assignment.group(2))
                    assert len(found) == 1, f"{block.doc}: {command.text} matched {found}"
                    variables[assignment.group(1)] = found[0]
                    continue
                assert command.text.startswith("vitzoo "), \
                    f"{block.doc}: a command the test does not know (run it, or mark the block): {command.text}"
                check(command, *run(as_run(command.text, variables)))
                done.append(command.text)
    return done


def repository_folder(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name.replace("/", "_")
    folder.mkdir()
    (folder / "configs").symlink_to(ROOT / "configs")  # the documents' paths are the repository's
    return folder


def shell_blocks(needs_at_most: set[str]) -> dict[str, list[Block]]:
    return {name: [b for b in blocks if b.lang in SHELL and b.needs <= needs_at_most]
            for name, blocks in ALL_BLOCKS.items()}


def test_every_shell_block_runs_or_says_what_it_needs():
    for name, blocks in ALL_BLOCKS.items():
        text = next(p for p in DOCS if p.name == name).read_text(encoding="utf-8")
        marked = [b for b in blocks if b.needs]
        assert len(marked) == len(MARKER.findall(text)), \
            f"{name}: a <!-- needs: ... --> comment must sit on the line just before a shell block"
        for block in marked:
            assert block.lang in SHELL | {"python"}, f"{name}: needs marked on a {block.lang or 'plain'} block"
            assert block.needs <= set(NEEDS), f"{name}: unknown needs {sorted(block.needs - set(NEEDS))}: " \
                                              f"use one of {sorted(NEEDS)}"


def test_cheap_blocks_run_as_written(tmp_path):
    """Seconds: the unmarked blocks (help, listings, a small generated dataset, a dry run)."""
    done = []
    for name, blocks in shell_blocks(set()).items():
        done += run_blocks(blocks, repository_folder(tmp_path, name))
    assert {c.split()[1] for c in done} >= {"--help", "models", "make-dataset", "train"}


@pytest.mark.slow
def test_documented_commands_run_as_written(tmp_path):
    """~2-3 min: every file's unmarked and `slow` blocks in order on the reduced demo (1-epoch runs of the
    classifier, the tokenizer and pre-training, then every command on their checkpoints)."""
    done = []
    folders = {}
    for name, blocks in shell_blocks({"slow"}).items():
        folders[name] = repository_folder(tmp_path, name)
        done += run_blocks(blocks, folders[name])
    untested = set(COMMANDS) - {c.split()[1] for c in done}
    # bench: timings (tests/test_bench.py runs it on a small input); download: the network
    # (tests/test_cli_download.py runs it against a local hub)
    assert untested == {"bench", "download"}, f"commands no document runs: {sorted(untested)}"
    assert (folders["checkpoints.md"] / "hub" / "shapes-deit" / "config.json").is_file()
    assert (folders["inference.md"] / "attn.png").is_file() and (folders["training.md"] / "curves.png").is_file()
    assert (folders["pretraining.md"] / "pretrain_curves.png").is_file()
    assert (folders["pretraining.md"] / "knn.json").is_file()


def test_python_blocks_run():
    """Every python block runs, but those marked with what they need (a download: published weights)."""
    for name, blocks in ALL_BLOCKS.items():
        for block in (b for b in blocks if b.lang == "python" and not b.needs):
            namespace: dict = {}
            exec(compile(block.text, name, "exec"), namespace)  # noqa: S102 - the documents' own examples
            if name == "README.md":
                assert tuple(namespace["logits"].shape) == (2, 10) and len(namespace["maps"]) == 6


def test_readme_is_a_door():
    assert len(README.splitlines()) <= MAX_README_LINES
    for path in DOCS:  # reference, not a diary
        assert not re.search(r"\b(second|third|fourth|fifth|this) session\b", path.read_text(encoding="utf-8"),
                             re.IGNORECASE), path.name


def test_readme_lists_every_command_with_its_doc():
    table = README.split("## Commands", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([\w-]+)` \|.*\| \[\w+\]\(([^)]+)\) \|$", table, flags=re.MULTILINE)
    assert [name for name, _ in listed] == list(COMMANDS)


def test_links_and_paths_exist():
    """Relative links resolve; every src/, tests/, benchmarks/, scripts/, configs/ path and vitzoo.* name
    the documents mention exists (the reorganisation moved modules: vitzoo.precision is vitzoo.runtime.precision)."""
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if not re.match(r"\w+://", target):
                assert (path.parent / target).exists(), f"{path.name}: broken link {target}"
        for match in re.finditer(r"(?<![\w/])((?:src/vitzoo|tests|benchmarks|scripts|configs)/[\w./-]*\w)", text):
            if text[match.end():match.end() + 1] not in ("{", "*"):  # a pattern, not a path
                assert (ROOT / match.group(1)).exists(), f"{path.name}: {match.group(1)} does not exist"
        for dotted in set(re.findall(r"`(vitzoo(?:\.\w+)+)", text)):
            assert resolves(dotted), f"{path.name}: {dotted} is not a module or attribute of vitzoo"


def resolves(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            if importlib.util.find_spec(".".join(parts[:cut])) is None:
                continue
        except ModuleNotFoundError:  # a name inside a module, not a submodule
            continue
        obj = importlib.import_module(".".join(parts[:cut]))
        for attr in parts[cut:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_readme_layout_is_the_layer_table_of_test_imports():
    spec = importlib.util.spec_from_file_location("layer_table", ROOT / "tests" / "test_imports.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    section = README.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("|")][2:]
    layers = [tuple(re.findall(r"`(\w+)`", cells[1])) for cells in rows]
    assert layers == module.LAYERS


def expand_names(cell: str) -> list[str]:
    """``vit_tiny_patch16_224 / _384`` -> both names: each later part replaces as many trailing
    ``_``-parts of the first name as it has (``t2t_vit_t_14 / t_19``, ``t2t_vit_7 / 10``)."""
    first, *others = [part.strip() for part in cell.split("/")]
    names = [first]
    for other in others:
        parts = other.lstrip("_").split("_")
        names.append("_".join(first.split("_")[: -len(parts)] + parts))
    return names


def test_readme_weights_table_is_what_vitzoo_models_prints():
    """The README's model table is the weights table's own rendering, so it cannot drift from the data."""
    section = README.split("## Models", 1)[1].split("\n## ", 1)[0]
    table = "\n".join(line for line in section.splitlines() if line.startswith("|"))
    code, printed = run(["models", "--pretrained", "--markdown"])
    assert code == 0 and table == printed.strip()


def test_model_table_counts_are_what_vitzoo_models_prints():
    models = (ROOT / "docs" / "models.md").read_text(encoding="utf-8")
    table = models.split("The zoo in one table", 1)[1].split("\n\n", 2)[1]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:]]
    assert len(rows) >= 15
    for name_cell, _family, _input, params_cell, *_ in rows:
        names = expand_names(name_cell)
        counts = [int(c.replace(",", "")) for c in params_cell.split("/")]
        assert len(names) == len(counts), name_cell
        for name, count in zip(names, counts):
            assert count_params(name)[0] == count, name


def test_docs_state_the_durations_they_promise():
    performance = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert "`make bench` times two models against their references in about a minute" in performance
    assert "make bench FULL=1" in performance
    assert os.path.isfile(ROOT / "benchmarks" / "bench_models.py")
