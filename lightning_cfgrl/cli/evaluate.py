"""``cfgrl evaluate``: the quality-diversity plane and the paper's claims, for any domain, from YAML.

    cfgrl evaluate --config examples/configs/evaluate.yaml
    cfgrl evaluate --config my_eval.yaml --candidates.cfg_reference 2.0 --protocol.num_seeds 8

Every option is an argument of :class:`lightning_cfgrl.eval.Evaluation` (``--help`` lists them, the
fields of its settings groups ``candidates``, ``protocol``, ``prompts`` and ``output`` included);
scorers, embedders and the prompt datamodule are given by ``class_path``. Argument parsing only: the
library does the work, and every bad value is reported before the first sample.

``--help`` is one page: it lists each option with its doc, but not the options of the classes an option
takes (jsonargparse would list every ``nn.Module`` of torch as a possible embedder); ``--X.help CLASS``
prints those, e.g. ``cfgrl evaluate --embedder.help ContrastiveTokenEmbedder``.
"""

from __future__ import annotations

import re
import sys
import textwrap

from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter

from lightning_cfgrl.eval.candidates import format_table
from lightning_cfgrl.eval.claims import format_claims
from lightning_cfgrl.eval.evaluation import Evaluation

DESCRIPTION = """\
The quality-diversity plane and the paper's claims, for any domain, from YAML.

Every option below is an argument of lightning_cfgrl.eval.Evaluation or a field of one of its groups
(candidates, protocol, prompts, output): set it in the --config YAML file, on the command line
(--protocol.num_seeds 8, --candidates.cfg_reference 2.0), or both.
"""

EPILOG = """\
Classes: --scorers, --embedder, --reward_embedder and --prompts.datamodule take classes, by class_path
and init_args (examples/configs/evaluate.yaml, docs/guides/evaluation.md). --X.help CLASS lists the
options of one class, e.g.
  cfgrl evaluate --embedder.help ContrastiveTokenEmbedder
  cfgrl evaluate --prompts.datamodule.help PromptDataModule
  cfgrl evaluate --scorers.help lightning_cfgrl.experiments.PromptAdherence
Short names resolve for the package's embedders and PromptDataModule; name any other class (your
own, the scorers) by its full path.
"""

_KNOWN_SUBCLASSES = re.compile(r", known subclasses: [^()]*\)$")


def _plain(text: str) -> str:
    """The docstrings' reST, read in a terminal: ``:class:`~a.B``` -> ``B``, double backticks -> single."""
    text = re.sub(r":\w+:`~[\w.]*?(\w+)`", r"\1", text)
    return re.sub(r":\w+:`([\w.]+)`", r"\1", text).replace("``", "`")


class _OnePageHelp(DefaultHelpFormatter):
    """``cfgrl evaluate --help`` on one page: no lists of "known subclasses" (every ``nn.Module`` of torch
    for an embedder), a usage line of the top-level options only, paragraphs kept as written."""

    def _get_help_string(self, action):
        if action.option_strings and action.option_strings[0].endswith(".help"):
            option = action.option_strings[0]
            return f"List the options of a class for {option[: -len('.help')]} and exit."
        return _KNOWN_SUBCLASSES.sub(")", super()._get_help_string(action))

    def _expand_help(self, action):
        text = re.sub(r"<class '([\w.]+)'>", r"\1", super()._expand_help(action))
        return _plain(text)

    def start_section(self, heading):
        super().start_section(_plain(heading) if heading else heading)

    def _format_usage(self, usage, actions, *args, **kwargs):
        top = [a for a in actions if not any("." in s for s in a.option_strings)]
        return super()._format_usage(usage, top, *args, **kwargs)

    def _fill_text(self, text, width, indent):
        """Paragraphs (split at blank lines) are filled; indented lines (commands) are kept as written."""
        lines, paragraph = [], []
        for line in [*text.splitlines(), ""]:
            if line and not line.startswith(" "):
                paragraph.append(line)
                continue
            if paragraph:
                lines.append(
                    textwrap.fill(" ".join(paragraph), width, initial_indent=indent, subsequent_indent=indent)
                )
                paragraph = []
            lines.append(indent + line if line else "")
        return "\n".join(lines).rstrip("\n")


def build_parser() -> ArgumentParser:
    """The ``cfgrl evaluate`` parser: ``--config`` plus every argument of ``Evaluation``."""
    parser = ArgumentParser(
        prog="cfgrl evaluate", description=DESCRIPTION, epilog=EPILOG, formatter_class=_OnePageHelp
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file with any of the options below")
    parser.add_class_arguments(Evaluation, as_group=False)
    return parser


def evaluate_main(argv: list[str] | None = None) -> int:
    """Entry point of ``cfgrl evaluate``; returns the exit code (0 ok, 2 invalid arguments)."""
    parser = build_parser()
    args = sys.argv[1:] if argv is None else argv
    if any(arg.startswith("--") and arg.split("=")[0].endswith(".help") for arg in args):
        # --X.help only: jsonargparse resolves a short class name among the imported subclasses, so the
        # embedders' short names work there; parsing a config imports nothing more than it names
        import lightning_cfgrl.embedders  # noqa: F401
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
