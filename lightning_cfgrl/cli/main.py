"""The ``cfgrl`` console script: LightningCLI (``fit``/``validate``), ``merge``, ``evaluate``, ``generate``.

``cfgrl fit --config examples/configs/distill.yaml`` builds the model, data and callbacks from
``class_path``/``init_args`` YAML; ``cfgrl fit --print_config`` prints the full resolved config.
"""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningCLI


class CFGRLCLI(LightningCLI):
    """LightningCLI in subclass mode: any LightningModule / LightningDataModule by ``class_path``."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # test/predict would need test_step/predict_step, which the modules do not define
        return {name: keys for name, keys in LightningCLI.subcommands().items() if name in LIGHTNING_COMMANDS}


LIGHTNING_COMMANDS = ("fit", "validate")
COMMANDS = {
    "fit": "train (LightningCLI): cfgrl fit --config examples/configs/distill.yaml",
    "validate": "one validation pass (LightningCLI): cfgrl validate --config ... --ckpt_path ...",
    "merge": "interpolate a quality and a diversity checkpoint: cfgrl merge --quality Q --diversity D --out DIR",
    "evaluate": "quality-diversity plane and claims: cfgrl evaluate --config examples/configs/evaluate.yaml",
    "generate": "sample a checkpoint to tokens and WAVs: cfgrl generate --checkpoint C --prompts P --out DIR",
}
NOT_OFFERED = {
    "test": "cfgrl test is not offered: the modules define no test_step; evaluate held-out prompts with "
    "`cfgrl evaluate --config ...` (or `cfgrl validate` for the validation metrics)",
    "predict": "cfgrl predict is not offered: generation is `cfgrl generate --checkpoint ... --prompts ... --out DIR`",
}


def run_cli(args: list[str] | None = None, run: bool = True) -> CFGRLCLI:
    """Run the Lightning part of ``cfgrl`` with ``args`` (``sys.argv[1:]`` when None)."""
    return CFGRLCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
    )


def usage() -> str:
    """``cfgrl --help``: every command, with an example."""
    width = max(map(len, COMMANDS))
    lines = [
        f"usage: cfgrl [-h] [--version] {{{','.join(COMMANDS)}}} ...",
        "",
        "Diversity-rewarded CFG distillation for autoregressive audio-token models.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()),
        "",
        "`cfgrl <command> --help` lists a command's options.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    command = sys.argv[1:] if argv is None else argv
    first = command[0] if command else None
    if first in (None, "-h", "--help"):
        print(usage())
        return 0 if first else 2
    if first == "--version":
        from lightning_cfgrl import __version__

        print(f"cfgrl (lightning-cfgrl) {__version__}")
        return 0
    if first in NOT_OFFERED:
        print(f"cfgrl: error: {NOT_OFFERED[first]}", file=sys.stderr)
        return 2
    if first == "merge":
        from lightning_cfgrl.cli.merge import merge_main

        return merge_main(command[1:])
    if first == "evaluate":
        from lightning_cfgrl.cli.evaluate import evaluate_main

        return evaluate_main(command[1:])
    if first == "generate":
        from lightning_cfgrl.cli.generate import generate_main

        return generate_main(command[1:])
    run_cli(argv)  # None lets LightningCLI read sys.argv itself
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
