"""``cfgrl generate``: sample a checkpoint on prompts; write the tokens, and WAVs when a decoder is set.

    cfgrl generate --checkpoint runs/distill_beta0/checkpoints/last.ckpt --prompts '[[1, 1, 1], [4, 3, 2]]' \\
        --num_samples 4 --decoder synth --out runs/samples
    cfgrl generate --checkpoint base.ckpt --prompts prompts.json --guidance 3 --out runs/cfg3 \\
        --decoder.class_path lightning_cfgrl.audio.EncodecTokenizer --decoder.init_args.weights.checkpoint encodec_24khz.th
    cfgrl generate --checkpoint runs/musicgen_lora/checkpoints/last.ckpt --prompts '["calm piano", "loud rock"]' \\
        --num_frames 250 --decoder generator --out runs/musicgen_samples     # text prompts (MusicGen)
    cfgrl generate --checkpoint runs/steerable/checkpoints/last.ckpt --prompts '[[1, 1, 1]]' \\
        --controls '{guidance_scale: 3.0, diversity_weight: 0.0}' --out runs/steered

Argument parsing only; the work is :func:`lightning_cfgrl.audio.generate` (outputs described there):
``--num_samples``, ``--num_frames``, the sampling flags, ``--seed``, ``--batch_size``, ``--controls`` and
``--compile`` make its :class:`~lightning_cfgrl.audio.GenerationConfig`.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser

from lightning_cfgrl.audio.generation import GenerationConfig, generate
from lightning_cfgrl.audio.synth import SyntheticSynth
from lightning_cfgrl.audio.tokenizer import EncodecTokenizer
from lightning_cfgrl.core.sampling import DecodeConfig, SamplingConfig
from lightning_cfgrl.eval.prompts import load_prompts, text_prompts_of
from lightning_cfgrl.io.generators import is_pretrained_folder, load_generator_spec


def default_tokenizer(checkpoint: str) -> str | None:
    """The folder whose tokenizer encodes text prompts for ``checkpoint``: the checkpoint itself when it is
    a transformers folder, else the local model folder its generator spec was built from (MusicGen)."""
    if is_pretrained_folder(checkpoint):
        return checkpoint
    spec = load_generator_spec(checkpoint) if Path(checkpoint).is_file() else None
    source = (spec or {}).get("init_args", {}).get("model")
    return source if isinstance(source, str) and Path(source).is_dir() else None


def build_parser() -> ArgumentParser:
    """The ``cfgrl generate`` argument parser (every option can also come from ``--config``)."""
    parser = ArgumentParser(prog="cfgrl generate", description=__doc__.splitlines()[0])
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below")
    parser.add_argument(
        "--checkpoint", type=str, required=True, help="a CFGRLModule / PretrainModule / merged .ckpt"
    )
    parser.add_argument(
        "--prompts",
        type=list | dict | str,
        required=True,
        help="the prompts ([[1, 1, 1], [4, 3, 2]]) or a .json/.yaml/.safetensors file of them; text prompts "
        "(['calm piano', 'loud rock'], or a .txt/.csv/.json file of strings) for a text-conditioned model",
    )
    parser.add_argument(
        "--tokenizer",
        type=str | None,
        default=None,
        help="text tokenizer folder for text prompts (default: the MusicGen folder the checkpoint was built from)",
    )
    parser.add_argument(
        "--controls",
        type=dict[str, float] | str | None,
        default=None,
        help="control values of a steerable student, every control it takes: '{guidance_scale: 3.0, "
        "diversity_weight: 0.0}'; 'off' samples it with the control path off (a mode it never trained in)",
    )
    parser.add_argument("--out", type=str, required=True, help="output folder")
    parser.add_argument("--num_samples", type=int, default=1, help="samples per prompt")
    parser.add_argument("--num_frames", type=int | None, default=None, help="default: the checkpoint's")
    parser.add_argument("--guidance", type=float, default=1.0, help="CFG guidance scale (1 = no CFG)")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top_k", type=int | None, default=None)
    parser.add_argument("--top_p", type=float | None, default=None)
    parser.add_argument(
        "--decoder",
        type=SyntheticSynth | EncodecTokenizer | str | None,
        default=None,
        help="tokens -> audio: 'synth' (SyntheticSynth), 'generator' (a model that decodes itself, e.g. "
        "MusicGen), a class_path (EncodecTokenizer with a local checkpoint), or the dotted name of a decoder "
        "class built without arguments (lightning_cfgrl.experiments.folk.FolkRenderer: WAV and MIDI); "
        "none: tokens only",
    )
    parser.add_argument("--seed", type=int, default=0, help="prompt batch b is sampled with seed + b")
    parser.add_argument("--batch_size", type=int, default=8, help="prompts per sampling call")
    parser.add_argument("--device", type=str, default="cpu")
    parser.add_argument("--progress", type=bool, default=True, help="show a progress bar")
    parser.add_argument(
        "--compile",
        type=bool,
        default=False,
        help="decode with the model's static-shape step compiled by torch.compile (AudioTokenTransformer; "
        "pays a one-off compile of ~15 s per batch shape; see the docs: Guides, Generation)",
    )
    return parser


def generate_main(argv: list[str] | None = None) -> int:
    """Entry point of ``cfgrl generate``; returns the exit code (0 ok, 2 invalid arguments)."""
    parser = build_parser()
    cfg = parser.parse_args(argv)
    try:
        instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
        args = instantiate(cfg)
        settings = GenerationConfig(
            num_samples=args.num_samples,
            num_frames=args.num_frames,
            sampling=SamplingConfig(
                temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, guidance_scale=args.guidance
            ),
            seed=args.seed,
            batch_size=args.batch_size,
            controls=args.controls,
            decoding=DecodeConfig(compile=args.compile),
        )
        texts = text_prompts_of(args.prompts)
        tokenizer = args.tokenizer or (default_tokenizer(args.checkpoint) if texts is not None else None)
        files = generate(
            checkpoint=args.checkpoint,
            prompts=load_prompts(prompts=args.prompts, tokenizer=tokenizer),
            out=args.out,
            settings=settings,
            decoder=_named_decoder(args.decoder),
            device=args.device,
            progress=args.progress,
            prompt_texts=texts,
        )
    except (ValueError, TypeError, OSError, FloatingPointError) as err:  # NoMassError: garbage logits
        print(f"cfgrl generate: error: {err}", file=sys.stderr)
        return 2
    # a decoder may write more than WAVs (FolkRenderer: a MIDI file beside each): count each kind
    kinds = Counter(path.suffix.lstrip(".").upper() for path in files.audio)
    counted = " and ".join(f"{n} {kind}s" for kind, n in kinds.items())
    audio = f" and {counted} in {files.audio[0].parent}" if files.audio else ""
    print(f"wrote {files.tokens} ({tuple(files.frames.shape)} frames){audio}; settings in {files.metadata}")
    return 0


if __name__ == "__main__":
    sys.exit(generate_main())


def _named_decoder(decoder: Any) -> Any:
    """``--decoder package.module.Class``: the user named a decoder class on the command line (trusted, as
    ``--import`` is; never a name read from a file), built without arguments. Other values pass through."""
    if not isinstance(decoder, str) or "." not in decoder:
        return decoder
    import importlib

    module, _, name = decoder.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"--decoder {decoder!r}: no class {name!r} in module {module!r} ({err}); expected 'synth', "
            "'generator', a class_path or the dotted name of a decoder class"
        ) from None
    return cls()
