"""``python -m vitzoo.cli.launch TORCHRUN_ARGS``: ``torchrun``, with a failed process reported in one line.

Why: torchrun ends a run whose process failed by raising ``ChildFailedError``; its traceback and failure
table (~30 lines) bury the one-line message the process printed itself. This runs torchrun's own ``main``
unchanged and turns that exception into one line naming the rank and its exit status, which becomes
this command's exit status. The wrappers in ``scripts/`` launch through it.
"""
from __future__ import annotations

import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main as torchrun_main


def main(argv: list[str] | None = None) -> int:
    try:
        torchrun_main(argv)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        code = failure.exitcode
        how = f"exit status {code}" if code >= 0 else f"signal {-code}"
        print(f"torchrun: the run stopped: rank {rank} ended with {how} (the error is reported above)",
              file=sys.stderr)
        if code < 0:  # killed by a signal: the status a shell gives such a process
            return 128 - code
        return code if 0 < code < 256 else 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
