"""``cfgrl export``: a trained checkpoint -> a transformers ``save_pretrained`` folder.

    cfgrl export --checkpoint runs/musicgen/checkpoints/last.ckpt --out exported/
    cfgrl export --checkpoint merged/merged_lambda=0.50.safetensors --base models/musicgen-small --out exported/

Distilled (full finetune), LoRA (adapters merged into dense weights) and merged (``cfgrl merge``)
checkpoints alike; ``MusicgenForConditionalGeneration.from_pretrained(out)`` then loads the model, and
the text tokenizer files of the base folder are copied beside it, so ``AutoProcessor``/``AutoTokenizer``
load from ``out`` too. The folder appears atomically (written beside it, then renamed).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
from pathlib import Path

from jsonargparse import ArgumentParser
from torch import nn

from lightning_cfgrl.io.checkpoints import atomic_save_json, file_sha256, is_safetensors_file
from lightning_cfgrl.io.generators import load_generator, load_generator_spec, load_init_checkpoint
from lightning_cfgrl.io.outputs import check_not_an_input, check_only_own_files

# what AutoTokenizer / AutoProcessor read from a MusicGen folder
PROCESSOR_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "spiece.model",
    "added_tokens.json",
    "preprocessor_config.json",
    "processor_config.json",
)


def export_pretrained(checkpoint: str, out: str, base: str | None = None, overwrite: bool = False) -> Path:
    """Write the generator of ``checkpoint`` as a transformers ``save_pretrained`` folder ``out``.

    ``checkpoint`` is a Lightning ``.ckpt`` of a ``CFGRLModule`` (its generator spec rebuilds the model;
    LoRA adapters are folded into dense weights) or a ``.safetensors`` file of generator weights (then
    ``base``, a local MusicGen folder, gives the architecture). Returns ``out``.
    """
    target = Path(out)
    check_not_an_input(target, {"checkpoint": checkpoint, "base model folder": base})
    if target.exists() and not (overwrite or (target.is_dir() and not any(target.iterdir()))):
        raise FileExistsError(
            f"--out {out!r} exists and is not empty; choose a new folder or pass --overwrite"
        )
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"--out {out!r} is a file; expected a folder")
    generator, source_folder = _load(checkpoint, base)
    # the folder the processor files come from is an input too (the spec's model folder)
    check_not_an_input(target, {"model folder": source_folder})
    if target.exists() and any(target.iterdir()):
        check_only_own_files(target, _manifest_files(target), "cfgrl export")
    model = getattr(generator, "model", None)
    if not callable(getattr(model, "save_pretrained", None)):
        raise ValueError(
            f"{checkpoint} holds a {type(generator).__name__}, which has no transformers model to export "
            "(save_pretrained needs a MusicgenGenerator); use the generator's safetensors from `cfgrl merge` instead"
        )
    tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        copied = _copy_processor_files(source_folder, tmp)
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if p.is_file())
        atomic_save_json(
            {
                "source": {"path": os.path.abspath(checkpoint), "sha256": file_sha256(checkpoint)},
                "base": os.path.abspath(base) if base else None,
                "processor_files": copied,
                "files": [*files, MANIFEST],  # what a later --overwrite may remove
                "created_by": "cfgrl export",
            },
            tmp / MANIFEST,
        )
        if target.exists():
            old = target.parent / f".{target.name}.{secrets.token_hex(6)}.old"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


MANIFEST = "cfgrl_export.json"


def _manifest_files(folder: Path) -> list[str]:
    """The files an earlier ``cfgrl export`` wrote into ``folder`` (its manifest), or [] if it wrote none."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(manifest, dict) or manifest.get("created_by") != "cfgrl export":
        return []
    files = manifest.get("files")
    return [f for f in files if isinstance(f, str)] if isinstance(files, list) else []


def _load(checkpoint: str, base: str | None) -> tuple[nn.Module, Path | None]:
    """The dense generator and the local folder its base came from (for the tokenizer files), if any."""
    if not Path(checkpoint).is_file():
        raise FileNotFoundError(f"--checkpoint {checkpoint!r} does not exist")
    if is_safetensors_file(checkpoint):
        if base is None:
            raise ValueError(
                f"{checkpoint} is a safetensors file of generator weights, which records no architecture; "
                "pass --base, the local MusicGen folder it was trained from"
            )
        from lightning_cfgrl.adapters.musicgen import MusicgenGenerator

        generator = MusicgenGenerator(base)
        load_init_checkpoint(generator, checkpoint)
        return generator.eval(), Path(base)
    generator = load_generator(checkpoint, merge_adapters=True)
    spec = load_generator_spec(checkpoint) or {}
    source = (spec.get("init_args") or {}).get("model")
    folder = (
        Path(base) if base else (Path(source) if isinstance(source, str) and Path(source).is_dir() else None)
    )
    return generator, folder


def _copy_processor_files(folder: Path | None, out: Path) -> list[str]:
    if folder is None:
        return []
    copied = []
    for name in PROCESSOR_FILES:
        if (folder / name).is_file():
            shutil.copy2(folder / name, out / name)
            copied.append(name)
    return copied


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="cfgrl export", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", type=str, required=True, help=".ckpt (distilled, LoRA, merged) or .safetensors"
    )
    parser.add_argument("--out", type=str, required=True, help="output folder (save_pretrained)")
    parser.add_argument(
        "--base", type=str, default=None, help="local MusicGen folder (needed for .safetensors)"
    )
    parser.add_argument("--overwrite", type=bool, default=False, help="replace an existing --out folder")
    return parser


def export_main(argv: list[str] | None = None) -> int:
    """Entry point of ``cfgrl export``; returns the exit code (0 ok, 1 invalid input)."""
    args = build_parser().parse_args(argv)
    try:
        out = export_pretrained(args.checkpoint, args.out, args.base, args.overwrite)
    except (ValueError, ImportError, OSError) as err:  # CheckpointError is a ValueError
        print(f"cfgrl export: error: {err}", file=sys.stderr)
        return 1
    print(f"exported {args.checkpoint} to {out} (transformers save_pretrained)")
    return 0


if __name__ == "__main__":
    sys.exit(export_main())
