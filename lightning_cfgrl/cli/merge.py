"""``cfgrl merge``: merge a quality and a diversity checkpoint at several lambdas, offline.

    cfgrl merge --quality Q.ckpt --diversity D.ckpt --lambdas 0,0.5,1 --out merged/ [--method slerp]
    cfgrl merge --config merge.yaml

lam = 0 is the quality model, lam = 1 the diversity model. Per lam, ``--out`` gets the same three files
as :class:`~lightning_cfgrl.callbacks.merge.ModelMergeCallback` writes.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Union

from jsonargparse import ActionConfigFile, ArgumentParser
from tqdm import tqdm

from lightning_cfgrl.io.checkpoints import (
    GENERATOR_PREFIX,
    file_sha256,
    is_safetensors_file,
    load_checkpoint,
    load_generator_state,
)
from lightning_cfgrl.io.generators import load_generator_spec
from lightning_cfgrl.merging.consistency import check_specs_agree
from lightning_cfgrl.merging.lora import dense_template, is_peft_checkpoint, open_dense_sources
from lightning_cfgrl.merging.merged_sets import MergedFiles, check_outputs_are_not_inputs, merge_output_dir
from lightning_cfgrl.merging.streaming import (
    MergeError,
    MergeOutput,
    check_lambdas,
    check_method,
    validate_merge,
    write_merged,
)


def merge_checkpoints(
    quality: str,
    diversity: str,
    lambdas: Sequence[float],
    out: str,
    method: str = "lerp",
    allow_extrapolation: bool = False,
    progress: bool = False,
) -> list[MergedFiles]:
    """Write theta(lam) = (1 - lam) * theta_quality + lam * theta_diversity for each lam into ``out``.

    Each source is a Lightning ``.ckpt`` (its ``generator.*`` weights) or a ``.safetensors`` file of
    generator weights. The ``.ckpt`` output is the quality checkpoint with its generator weights
    replaced and optimizer/callback states dropped; it is only written when ``quality`` is a Lightning
    checkpoint. Everything is validated before the first file is written; each lambda's files appear
    together or not at all (see :func:`~lightning_cfgrl.merging.streaming.write_merged`), an output that
    would overwrite an input is refused, and temporary files of an earlier, killed merge into ``out``
    are removed. Memory stays about two models whatever the number of lambdas.

    A LoRA/PEFT checkpoint (adapters only) enters as the dense weights of its merged model (base + delta,
    see :mod:`lightning_cfgrl.merging.lora`), so the weight deltas are interpolated, not the factors; the
    outputs are then plain dense generators.
    """
    check_method(method)
    lams = check_lambdas(lambdas, allow_extrapolation)

    open_quality, open_diversity = _source_openers(quality, diversity)
    validate_merge(open_quality(), open_diversity(), lams, allow_extrapolation)
    # same spec, not only same shapes (a safetensors source records none and is compared by shape only)
    check_specs_agree(
        {
            f"--quality {quality}": load_generator_spec(quality),
            f"--diversity {diversity}": load_generator_spec(diversity),
        }
    )
    template = None if is_safetensors_file(quality) else functools.partial(_template, quality, open_quality)
    check_outputs_are_not_inputs(
        out, lams, template is not None, {"--quality": quality, "--diversity": diversity}
    )
    sources = {
        name: {"path": os.path.abspath(path), "sha256": file_sha256(path)}
        for name, path in (("quality", quality), ("diversity", diversity))
    }
    output = MergeOutput(
        out,
        checkpoint_template=template,
        prefix=GENERATOR_PREFIX,
        sidecar={"sources": sources, "created_by": "cfgrl merge"},
    )
    written = []
    with merge_output_dir(out):
        for lam in tqdm(lams, desc="cfgrl merge", unit="model", disable=not progress):
            written.append(
                write_merged(
                    anchor=open_quality,
                    current=open_diversity,
                    lam=lam,
                    output=output,
                    method=method,
                    allow_extrapolation=allow_extrapolation,
                    validate=False,
                )
            )
    return written


def _template(path: str, open_source: Callable[[], Mapping]) -> Mapping:
    """The quality checkpoint as the template of the merged ``.ckpt`` (made dense when it is LoRA)."""
    ckpt = load_checkpoint(path, mmap=True)
    return dense_template(ckpt, open_source()) if is_peft_checkpoint(path) else ckpt


def _source_openers(quality: str, diversity: str) -> tuple[Callable[[], Mapping], Callable[[], Mapping]]:
    """Callables that open each source as a generator state dict: lazily mapped from its file, or for a
    LoRA checkpoint the dense weights of base + adapter (rebuilt once, shared by every call)."""
    if is_peft_checkpoint(quality) or is_peft_checkpoint(diversity):
        dense = open_dense_sources({"quality": quality, "diversity": diversity})
        return (lambda: dense["quality"]), (lambda: dense["diversity"])
    return (
        lambda: load_generator_state(quality, GENERATOR_PREFIX),
        lambda: load_generator_state(diversity, GENERATOR_PREFIX),
    )


def build_parser() -> ArgumentParser:
    """The ``cfgrl merge`` argument parser (every option can also come from ``--config``)."""
    parser = ArgumentParser(prog="cfgrl merge", description=__doc__.splitlines()[0])
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below")
    parser.add_argument("--quality", type=str, required=True, help="anchor checkpoint (lambda = 0)")
    parser.add_argument("--diversity", type=str, required=True, help="checkpoint at lambda = 1")
    parser.add_argument(
        "--lambdas",
        type=Union[list[float], float, str],
        default="0,0.25,0.5,0.75,1",
        help="comma-separated list (0,0.5,1) or a YAML list",
    )
    parser.add_argument("--out", type=str, required=True, help="output directory")
    parser.add_argument("--method", type=str, default="lerp", help="lerp or slerp")
    parser.add_argument(
        "--allow_extrapolation", type=bool, default=False, help="allow lambdas outside [0, 1]"
    )
    return parser


def parse_lambdas(value: list[float] | float | str) -> list[float]:
    """``"0,0.5,1"``, ``0.5`` or ``[0, 0.5, 1]`` -> ``[0.0, 0.5, 1.0]``."""
    if isinstance(value, str):
        try:
            return [float(part) for part in value.split(",") if part.strip()]
        except ValueError as err:
            raise MergeError(
                f"--lambdas must be comma-separated numbers like 0,0.5,1, got {value!r}"
            ) from err
    if isinstance(value, (int, float)):
        return [float(value)]
    return [float(v) for v in value]


def merge_main(argv: list[str] | None = None) -> int:
    """Entry point of ``cfgrl merge``; returns the process exit code (0 ok, 1 invalid inputs)."""
    args = build_parser().parse_args(argv)
    try:
        written = merge_checkpoints(
            quality=args.quality,
            diversity=args.diversity,
            lambdas=parse_lambdas(args.lambdas),
            out=args.out,
            method=args.method,
            allow_extrapolation=args.allow_extrapolation,
            progress=True,
        )
    except (
        ValueError,
        ImportError,
        OSError,
    ) as err:  # MergeError, CheckpointError, a bad LoRA base, disk full
        print(f"cfgrl merge: error: {err}", file=sys.stderr)
        return 1
    for files in written:
        print(f"lambda={files.lam}: {files.checkpoint or files.safetensors}")
    return 0


if __name__ == "__main__":
    sys.exit(merge_main())
