"""``cfgrl tiny-musicgen --out DIR``: a tiny random MusicGen folder for CPU trials of the MusicGen recipes.

    cfgrl tiny-musicgen --out models/tiny-musicgen
    cfgrl fit --config examples/configs/musicgen_lora.yaml \\
        --model.init_args.generator.init_args.model models/tiny-musicgen --data.init_args.tokenizer models/tiny-musicgen

Argument parsing only; the work is :func:`lightning_cfgrl.adapters.tiny_musicgen.tiny_random_musicgen`.
"""

from __future__ import annotations

import sys

from jsonargparse import ArgumentParser


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="cfgrl tiny-musicgen", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=str, required=True, help="new folder (model, tokenizer, processor)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    parser.add_argument("--num_codebooks", type=int, default=2, help="codebooks K (EnCodec quantizers)")
    parser.add_argument("--stereo", type=bool, default=False, help="two channels (K even)")
    return parser


def tiny_musicgen_main(argv: list[str] | None = None) -> int:
    """Entry point of ``cfgrl tiny-musicgen``; returns the exit code (0 ok, 2 invalid arguments)."""
    args = build_parser().parse_args(argv)
    try:
        from lightning_cfgrl.adapters.tiny_musicgen import tiny_random_musicgen

        out = tiny_random_musicgen(args.out, args.seed, args.num_codebooks, args.stereo)
    except (ValueError, ImportError, OSError) as err:
        print(f"cfgrl tiny-musicgen: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote a tiny random MusicGen (model, text tokenizer, processor) to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(tiny_musicgen_main())
