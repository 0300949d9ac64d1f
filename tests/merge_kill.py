"""A ``cfgrl merge`` that SIGKILLs itself at its k-th commit event (run as a subprocess)::

    python -m tests.merge_kill QUALITY DIVERSITY OUT K [--lambdas 0.25,0.5,0.75]

Events are the renames into ``OUT`` and the removals of files in it (not of temporary files), in the
order the merge makes them: per lambda, the old sidecar's removal, the two model files' renames, the new
sidecar's rename. The process dies *before* event K happens, with every earlier write complete, and
nothing gets to clean up.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from lightning_cfgrl.cli.merge import merge_checkpoints, parse_lambdas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("quality")
    parser.add_argument("diversity")
    parser.add_argument("out", type=Path)
    parser.add_argument("kill_at", type=int)
    parser.add_argument("--lambdas", default="0.25,0.5,0.75")
    args = parser.parse_args()
    out, count = args.out.resolve(), [0]
    real_replace, real_unlink = os.replace, os.unlink

    def event() -> None:
        if count[0] == args.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        count[0] += 1

    def replace(src, dst, **kwargs):  # noqa: ANN001, ANN202
        if Path(dst).resolve().parent == out:
            event()
        return real_replace(src, dst, **kwargs)

    def unlink(path, **kwargs):  # noqa: ANN001, ANN202
        if Path(path).resolve().parent == out and not str(path).endswith(".tmp"):
            event()
        return real_unlink(path, **kwargs)

    os.replace, os.unlink = replace, unlink
    merge_checkpoints(args.quality, args.diversity, parse_lambdas(args.lambdas), str(args.out))
    raise SystemExit(f"merge finished after {count[0]} events without reaching event {args.kill_at}")


if __name__ == "__main__":
    main()
