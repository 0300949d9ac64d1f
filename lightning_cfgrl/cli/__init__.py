"""The ``cfgrl`` console script: LightningCLI subcommands plus ``merge`` and ``evaluate``."""

from lightning_cfgrl.cli.main import CFGRLCLI, main, run_cli

__all__ = ["CFGRLCLI", "main", "run_cli"]
