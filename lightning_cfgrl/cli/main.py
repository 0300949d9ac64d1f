"""The ``cfgrl`` console script: LightningCLI (``fit``/``validate``/``test``/``predict``), ``merge``, ``evaluate``.

``cfgrl fit --config examples/configs/distill.yaml`` builds the model, data and callbacks from
``class_path``/``init_args`` YAML; ``cfgrl fit --print_config`` prints the full resolved config.
"""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningCLI


class CFGRLCLI(LightningCLI):
    """LightningCLI in subclass mode: any LightningModule / LightningDataModule by ``class_path``."""


def run_cli(args: list[str] | None = None, run: bool = True) -> CFGRLCLI:
    """Run the Lightning part of ``cfgrl`` with ``args`` (``sys.argv[1:]`` when None)."""
    return CFGRLCLI(
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=args,
        run=run,
        save_config_kwargs={"overwrite": True},
    )


def main(argv: list[str] | None = None) -> int:
    command = sys.argv[1:] if argv is None else argv
    if command and command[0] == "merge":
        from lightning_cfgrl.cli.merge import merge_main

        return merge_main(command[1:])
    if command and command[0] == "export":
        from lightning_cfgrl.cli.export import export_main

        return export_main(command[1:])
    if command and command[0] == "evaluate":
        from lightning_cfgrl.cli.evaluate import evaluate_main

        return evaluate_main(command[1:])
    run_cli(argv)  # None lets LightningCLI read sys.argv itself
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
