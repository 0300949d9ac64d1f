"""The ``cfgrl`` console script: LightningCLI (``fit``/``validate``), ``merge``, ``evaluate``, ``generate``.

``cfgrl fit --config examples/configs/distill.yaml`` builds the model, data and callbacks from
``class_path``/``init_args`` YAML; ``cfgrl fit --print_config`` prints the full resolved config.
``cfgrl <command> --import MODULE`` (or ``CFGRL_IMPORT``) trusts the user's own modules (cli/imports.py).
"""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from lightning_cfgrl.cli.saved_config import LoadedConfigSaver, resolve_printed_config
from lightning_cfgrl.io.specs import check_checkpoint_file
from lightning_cfgrl.training.checkpoint_safety import weights_from_checkpoint
from lightning_cfgrl.training.configs import upgrade_hparams
from lightning_cfgrl.training.resume_check import TRAINING_SETTINGS, setting_differences


class ConfigError(ValueError):
    """The config (or ``--ckpt_path``) cannot build the run. The message is the root cause, so that it
    can be the last line the user sees; ``report`` keeps jsonargparse's full account, if any."""

    def __init__(self, message: str, report: str | None = None) -> None:
        super().__init__(message)
        self.report = report


class CFGRLCLI(LightningCLI):
    """LightningCLI in subclass mode: any LightningModule / LightningDataModule by ``class_path``.

    On top of LightningCLI: checkpoints are loaded weights-only by default (Lightning's default for an
    ``http(s)://`` ``--ckpt_path`` is ``weights_only=False``); a local ``--ckpt_path`` is checked before
    LightningCLI reads its hyperparameters into the config (it must come from the configured module
    class, and its generator/embedder specs may only name ``nn.Module`` classes); and a constructor's
    own error is raised as :class:`ConfigError` instead of being buried in jsonargparse's Union report.
    """

    def _prepare_subcommand_parser(
        self, klass: type, subcommand: str, **kwargs: Any
    ) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if "weights_only" in self._subcommand_method_arguments.get(subcommand, ()):
            parser.set_defaults(weights_only=True)
        return parser

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads a local ckpt_path's hyper_parameters into the config: its "_class_path" may
        # swap the model class, and its generator spec is instantiated. Check both first.
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if ckpt_path == "last":  # the file Lightning would pick, so that it is checked like a named one
            found = _run_checkpoint_last(self.config[subcommand])
            if found is not None:
                ckpt_path = self.config[subcommand].ckpt_path = str(found)
        hparams = None
        if ckpt_path and Path(ckpt_path).is_file():
            expected = _configured_class(self.config[subcommand].get("model"))
            try:
                hparams = check_checkpoint_file(ckpt_path, expected, f"--ckpt_path {ckpt_path}")
            except ValueError as err:  # CheckpointError, UnsafeSpecError, a class mismatch
                raise ConfigError(str(err)) from None
        if not hparams:
            return
        hparams = upgrade_hparams(hparams)  # a checkpoint of the flat layout resumes with the grouped config
        # LightningCLI replaces the configured settings by the checkpoint's: a changed one would be dropped
        # silently. Refuse it by name instead (a resume records what it did).
        model = self.config[subcommand].get("model")
        before = _init_args(model)
        changed = setting_differences(hparams, before, [k for k in TRAINING_SETTINGS if k in before])
        if changed and subcommand == "fit":
            raise ConfigError(
                f"--ckpt_path {ckpt_path}: {len(changed)} training setting(s) of the config differ from the "
                f"checkpoint's: {'; '.join(changed[:8])}. Resuming continues the checkpoint's run with its own "
                "settings; resume with them, or start a new run from its weights with "
                f"--model.init_args.init_checkpoint={ckpt_path} (without --ckpt_path)"
            )
        # LightningCLI's own step, from the hyperparameters read (and checked) above; a checkpoint written
        # from Python records no "_class_path": the configured class (checked to match) stands in
        settings = dict(hparams)
        settings.pop("_instantiator", None)
        class_path = settings.pop("_class_path", None) or (model.get("class_path") if model else None)
        try:
            self.config = self.parser.parse_object(
                {subcommand: {"model": {"class_path": class_path, "dict_kwargs": settings}}}, self.config
            )
        except SystemExit:
            raise ConfigError(
                f"--ckpt_path {ckpt_path}: its hyperparameters do not parse as the configured model's "
                "arguments (the jsonargparse report is above)"
            ) from None
        # a checkpoint holding every generator weight: the model's init_checkpoint is not re-read
        self._full_weights = hparams.get("peft_config") is None

    def instantiate_classes(self) -> None:
        with weights_from_checkpoint(getattr(self, "_full_weights", False)):
            self._instantiate_classes()

    def _instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:
            cause = root_cause(str(err))
            if cause is None or cause == str(err):
                raise
            raise ConfigError(cause, report=str(err)) from err

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # test/predict would need test_step/predict_step, which the modules do not define
        return {name: keys for name, keys in LightningCLI.subcommands().items() if name in LIGHTNING_COMMANDS}


# jsonargparse's own lines in a Union report; the first other line is the constructor's message
_REPORT_NOISE = re.compile(
    r"^(Does not validate against any of the Union subtypes|Subtypes:|Errors:|Given value|Expected a <class|"
    r"Not a valid subclass of|Subclass types expect one of|a class path \(str\)|a dict with|a dict without|"
    r"Problem with given class_path|Parser key|Expected a path but)"
)


def parse_error_cause(report: str) -> str | None:
    """One line naming the problem of a jsonargparse parse error: the option's key path, the class_path it
    was building, and the first line of the report that is not jsonargparse's own wording."""
    # "Expected a <class 'int'>. Got value: abc" names the problem; root_cause skips "Expected a <class"
    got = [line.strip() for line in report.splitlines() if "Got value:" in line]
    cause = got[0] if got else root_cause(report)
    if cause is None:
        return None
    keys = re.findall(r'Parser key "([^"]+)"', report)
    class_paths = re.findall(r"Problem with given class_path '([^']+)'", report)
    where = ".".join(dict.fromkeys(keys))
    if class_paths:
        cause += moved_setting_hint(class_paths[-1], cause)
        if class_paths[-1] not in cause:
            cause = f"class_path {class_paths[-1]!r}: {cause}"
    return f"{where}: {cause}" if where and where not in cause else cause


def moved_setting_hint(class_path: str, cause: str) -> str:
    """``"; teacher_checkpoint is teacher.checkpoint now"`` when ``cause`` refuses an argument that the
    class (already imported) lists in its ``moved_settings``; else ``""``."""
    from lightning_cfgrl.io.specs import imported_class

    found = re.search(r"Option '([^']+)' is not accepted", cause)
    moved = getattr(imported_class(class_path), "moved_settings", None) or {}
    if not found or found.group(1) not in moved:
        return ""
    old, new = found.group(1), moved[found.group(1)]
    group, field = new.split(".", 1)
    return f"; {old} is {new} now (init_args: {{{group}: {{{field}: ...}}}})"


class CFGRLArgumentParser(LightningArgumentParser):
    """LightningCLI's parser, whose parse errors end with one line naming the problem: jsonargparse's
    Union report (printed in full first) otherwise ends with a dump of the given value."""

    def dump(self, cfg: Any, *args: Any, **kwargs: Any) -> str:
        text = super().dump(cfg, *args, **kwargs)
        root = self
        while hasattr(root, "parent_parser"):
            root = root.parent_parser
        # only --print_config (jsonargparse leaves `print_config` on the root parser, then exits); the
        # run's saved config.yaml is written from the built objects instead (LoadedConfigSaver)
        return resolve_printed_config(text) if hasattr(root, "print_config") else text

    def error(self, message: str, ex: Exception | None = None) -> Any:
        cause = parse_error_cause(message)
        try:
            super().error(message, ex)
        except SystemExit:
            if cause and cause != message.strip().splitlines()[-1].strip():
                sys.stderr.write(f"{self.prog.replace(' [options]', '')}: error: {cause}\n")
            raise


def root_cause(report: str) -> str | None:
    """The first line of a jsonargparse error report that is not jsonargparse's own wording, or None."""
    for line in report.splitlines():
        text = line.strip()
        text = text[2:].strip() if text.startswith("- ") else text
        if text and not _REPORT_NOISE.match(text):
            return text
    return None


def _run_checkpoint_last(config: Any) -> Path | None:
    """``--ckpt_path last`` of a run whose checkpoints a ``RunCheckpoint`` writes: its ``last.ckpt``
    (``<dirpath>`` or ``<logger save_dir>/<logger name>/checkpoints``), if that file exists; else None
    (Lightning's own search then applies)."""

    def get(node: Any, key: str) -> Any:
        return node.get(key) if hasattr(node, "get") else None

    trainer = get(config, "trainer")
    for callback in get(trainer, "callbacks") or []:
        if not str(get(callback, "class_path") or "").endswith("RunCheckpoint"):
            continue
        dirpath = get(get(callback, "init_args"), "dirpath")
        if dirpath is None:
            logger = get(trainer, "logger")
            logger = logger[0] if isinstance(logger, list) and logger else logger
            args = get(logger, "init_args")
            save_dir, name = get(args, "save_dir"), get(args, "name")
            if save_dir is None or name is None:
                return None
            dirpath = Path(save_dir) / str(name) / "checkpoints"
        last = Path(dirpath) / "last.ckpt"
        return last if last.is_file() else None
    return None


def _init_args(model: Any) -> dict[str, Any]:
    """The configured model's ``init_args`` as plain values ({} when there are none)."""
    args = model.get("init_args") if hasattr(model, "get") else None
    if args is None:
        return {}
    plain = args.as_dict() if hasattr(args, "as_dict") else dict(args)
    return {k: (v.as_dict() if hasattr(v, "as_dict") else v) for k, v in plain.items()}


def _configured_class(model: Any) -> type | None:
    # the config is the user's own (trusted): importing its class_path is what LightningCLI does anyway
    class_path = model.get("class_path") if hasattr(model, "get") else None
    if not isinstance(class_path, str) or "." not in class_path:
        return None
    module_name, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError):
        return None
    return cls if isinstance(cls, type) else None


LIGHTNING_COMMANDS = ("fit", "validate")
COMMANDS = {
    "fit": "train (LightningCLI): cfgrl fit --config examples/configs/distill.yaml",
    "validate": "one validation pass (LightningCLI): cfgrl validate --config ... --ckpt_path ...",
    "merge": "interpolate a quality and a diversity checkpoint: cfgrl merge --quality Q --diversity D --out DIR",
    "evaluate": "quality-diversity plane and claims: cfgrl evaluate --config examples/configs/evaluate.yaml",
    "generate": "sample a checkpoint to tokens and WAVs: cfgrl generate --checkpoint C --prompts P --out DIR",
    "export": "a MusicGen checkpoint as a transformers folder: cfgrl export --checkpoint C --out DIR",
    "tiny-musicgen": "a tiny random MusicGen folder for CPU trials: cfgrl tiny-musicgen --out DIR",
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
        parser_class=CFGRLArgumentParser,
        args=args,
        run=run,
        save_config_callback=LoadedConfigSaver,
        save_config_kwargs={"overwrite": True},
    )


def usage() -> str:
    """``cfgrl --help``: every command, with an example."""
    width = max(map(len, COMMANDS))
    lines = [
        f"usage: cfgrl [-h] [--version] [--import MODULE] {{{','.join(COMMANDS)}}} ...",
        "",
        "Diversity-rewarded CFG distillation for autoregressive audio-token models.",
        "",
        "commands:",
        *(f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()),
        "",
        "`cfgrl <command> --help` lists a command's options.",
        "Every command takes `--import MODULE` (repeatable; a module name or a .py file), or the environment",
        "variable CFGRL_IMPORT=mod1,mod2: your own modules (models, scorers), imported and trusted before any",
        "file is read; a checkpoint or YAML may name classes of them. Nothing named inside a file is imported.",
    ]
    return "\n".join(lines)


@contextlib.contextmanager
def warnings_above_progress_bars() -> Iterator[None]:
    """Within: Python warnings (Lightning's ``rank_zero_warn`` included) are printed with ``tqdm.write``,
    above any running progress bar instead of inside its line, where the bar's next redraw hides them."""
    from tqdm import tqdm

    def show(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip("\n")
        tqdm.write(text, file=file or sys.stderr)

    previous, warnings.showwarning = warnings.showwarning, show
    try:
        yield
    finally:
        warnings.showwarning = previous


def main(argv: list[str] | None = None) -> int:
    with warnings_above_progress_bars():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    from lightning_cfgrl.cli.imports import ImportOptionError, apply_imports

    try:  # the user's own trusted modules, before any file is read (cli/imports.py)
        command = apply_imports(sys.argv[1:] if argv is None else list(argv))
    except ImportOptionError as err:
        print(f"cfgrl: error: {err}", file=sys.stderr)
        return 2
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
    if first == "export":
        from lightning_cfgrl.cli.export import export_main

        return export_main(command[1:])
    if first == "tiny-musicgen":
        from lightning_cfgrl.cli.tiny_musicgen import tiny_musicgen_main

        return tiny_musicgen_main(command[1:])
    if argv is None:  # LightningCLI reads sys.argv itself (and warns when given args beside it)
        sys.argv[1:] = command
    try:
        run_cli(None if argv is None else command)
    except ConfigError as err:
        if err.report:
            print(err.report, file=sys.stderr)
        prog = f"cfgrl {command[0]}" if command and not command[0].startswith("-") else "cfgrl"
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
