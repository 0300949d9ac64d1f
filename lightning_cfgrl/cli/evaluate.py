"""``cfgrl evaluate``: the quality-diversity plane and the paper's claims, for any domain, from YAML.

    cfgrl evaluate --config examples/configs/evaluate.yaml
    cfgrl evaluate --config my_eval.yaml --candidates.cfg_reference 2.0 --num_seeds 8

Every option is an argument of :class:`lightning_cfgrl.eval.Evaluation` (``--help`` lists them);
scorers, embedders and the prompt datamodule are given by ``class_path``. Argument parsing only: the
library does the work, and every bad value is reported before the first sample.
"""

from __future__ import annotations

import sys

from jsonargparse import ActionConfigFile, ArgumentParser

from lightning_cfgrl.eval.candidates import format_table
from lightning_cfgrl.eval.claims import format_claims
from lightning_cfgrl.eval.evaluation import Evaluation


def build_parser() -> ArgumentParser:
    """The ``cfgrl evaluate`` parser: ``--config`` plus every argument of ``Evaluation``."""
    parser = ArgumentParser(prog="cfgrl evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below")
    parser.add_class_arguments(Evaluation, as_group=False)
    return parser


def evaluate_main(argv: list[str] | None = None) -> int:
    """Entry point of ``cfgrl evaluate``; returns the exit code (0 ok, 2 invalid arguments)."""
    parser = build_parser()
    cfg = parser.parse_args(argv)
    try:
        instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
        kwargs = {
            k: v for k, v in vars(instantiate(cfg)).items() if k not in ("config", "__default_config__")
        }
        evaluation = Evaluation(**kwargs)
    except (ValueError, TypeError, OSError) as err:  # construction errors: before any sample
        print(f"cfgrl evaluate: error: {err}", file=sys.stderr)
        return 2
    try:
        report = evaluation.run()
    except (ValueError, OSError, FloatingPointError) as err:  # a candidate that cannot be sampled, disk full
        print(f"cfgrl evaluate: error: {err}", file=sys.stderr)
        return 1
    print(format_table(report.results))
    for metric, fronts in report.hypervolumes.items():
        print(f"hypervolumes ({metric}): " + ", ".join(f"{front} {hv:.4f}" for front, hv in fronts.items()))
    if report.best_sampling is not None:
        print(f"best temperature/top-p point (chosen on the selection seeds): {report.best_sampling}")
    if report.claims:
        print(format_claims(report.claims))
    if evaluation.out is not None:
        print(f"wrote {evaluation.out}/results.csv, results.json, quality_diversity.png")
    for problem in report.warnings:  # last: what the user must not miss
        print(f"cfgrl evaluate: warning: {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(evaluate_main())
