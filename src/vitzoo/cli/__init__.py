"""`vitzoo` console entry point: one thin ``main(argv)`` per sub-command, imported lazily.

Every sub-command module exposes ``main(argv: list[str] | None) -> int`` so tests can call it in
process. User errors (:class:`vitzoo.errors.UserError`) are printed as one line and exit non-zero;
``--debug`` anywhere on the command line shows the full traceback instead.
"""
from __future__ import annotations

import importlib
import sys

from vitzoo.errors import UserError
from vitzoo.runtime.host_allocator import keep_freed_memory
from vitzoo.version import __version__

# name -> (module, one-line summary)
COMMANDS = {
    "demo": ("vitzoo.cli.demo", "the whole loop on a CPU in ~3 minutes: make data, train, evaluate (no download)"),
    "models": ("vitzoo.cli.models", "list registered models and their published weights (tags, top-1, license)"),
    "download": ("vitzoo.cli.download", "fetch weights by tag into the cache ahead of time (offline clusters)"),
    "train": ("vitzoo.cli.train", "train a model from a YAML config (+ --key value overrides)"),
    "pretrain": ("vitzoo.cli.pretrain", "BEiT masked-image-modeling pre-training on unlabeled images"),
    "eval": ("vitzoo.cli.eval", "evaluate a checkpoint on the validation set"),
    "linprobe": ("vitzoo.cli.linprobe", "linear-probe accuracy of a frozen encoder (BEiT/MAE protocol)"),
    "knn": ("vitzoo.cli.knn", "weighted k-NN accuracy of a frozen encoder (DINO protocol)"),
    "infer": ("vitzoo.cli.infer", "predict classes of an image or a folder of images, write JSON"),
    "export": ("vitzoo.cli.export", "export a checkpoint to ONNX / TorchScript / torch.export"),
    "eval-onnx": ("vitzoo.cli.eval_onnx", "evaluate an exported ONNX model with ONNX Runtime"),
    "infer-onnx": ("vitzoo.cli.infer_onnx", "predict with an exported ONNX model, write JSON"),
    "convert": ("vitzoo.cli.convert", "convert an official release checkpoint to vitzoo's format"),
    "make-dataset": ("vitzoo.cli.make_dataset", "write a small generated image dataset (no download)"),
    "train-tokenizer": ("vitzoo.cli.train_tokenizer", "train a visual tokenizer (VQ-VAE / dVAE) on your images for BEiT"),
    "attention": ("vitzoo.cli.attention", "draw attention maps (attention rollout) for images"),
    "plot": ("vitzoo.cli.plot", "draw training curves from a run's metrics file"),
    "bench": ("vitzoo.cli.bench", "measure img/s here, side by side with timm's model (ratio, % of peak)"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: vitzoo COMMAND [options]   (vitzoo COMMAND --help for details)", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    lines += ["", "add --debug to any command to see a full traceback on error"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"vitzoo {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        from difflib import get_close_matches

        near = get_close_matches(name, list(COMMANDS), n=3)
        hint = f" (did you mean: {', '.join(near)}?)" if near else ""
        print(f"vitzoo: unknown command '{name}'{hint}\n\n{_usage()}", file=sys.stderr)
        return 2
    return run(COMMANDS[name][0], rest, debug=debug, prog=f"vitzoo {name}")


def run(module: str, argv: list[str], *, debug: bool = False, prog: str = "vitzoo") -> int:
    """Run one sub-command's ``main`` and turn user errors into one line + exit code."""
    _setup_logging()
    keep_freed_memory()  # before the first tensor: see host_allocator (page faults on every activation)
    try:
        code = importlib.import_module(module).main(argv)
        return int(code or 0)
    except UserError as e:
        if debug:
            raise
        if str(e):  # an empty message: the error was already reported (by another process)
            print(f"{prog}: {e.label}: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def _setup_logging() -> None:
    """Show the library's INFO messages (what a loader dropped or resized, ...) on stderr, once."""
    import logging

    class _CurrentStderr(logging.StreamHandler):
        # always the *current* sys.stderr (tests and tools swap it), never a closed one
        @property
        def stream(self):
            return sys.stderr

        @stream.setter
        def stream(self, _value):
            pass

    logger = logging.getLogger("vitzoo")
    if not any(isinstance(h, logging.StreamHandler) for h in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
