"""``cfgrl evaluate`` / ``Evaluation``: a custom domain defined outside the package, the built-in preset,
every validation error before the first sample, strict JSON, selection on separate seeds."""

from __future__ import annotations

import ast
import csv
import dataclasses
import inspect
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import docstring_parser
import matplotlib.image
import pytest
import torch

import lightning_cfgrl
from lightning_cfgrl.cli.evaluate import build_parser, evaluate_main
from lightning_cfgrl.eval import (
    Candidates,
    Evaluation,
    EvaluationOutput,
    EvaluationProtocol,
    PromptSource,
    Scorer,
)
from lightning_cfgrl.eval.candidates import CandidateResult
from lightning_cfgrl.eval.pareto import hypervolume_2d, pareto_front
from lightning_cfgrl.eval.protocol import evaluation_seeds, selection_seeds
from lightning_cfgrl.io.checkpoints import atomic_save
from lightning_cfgrl.models import AudioTokenTransformer

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(
    num_codebooks=2, vocab_size=8, condition_sizes=(2,), dim=16, num_layers=1, num_heads=2, max_frames=8
)

# A domain of its own, outside the package: prompts from a datamodule's validation batches (no
# heldout_prompts), a higher-is-better and a lower-is-better scorer with their chance levels, an embedder.
DOMAIN = '''
import torch
import torch.nn.functional as F
import lightning.pytorch as pl
from torch import nn
from torch.utils.data import DataLoader

from lightning_cfgrl.eval import Scorer


class ParityPrompts(pl.LightningDataModule):
    """Prompt ids 1, 2, 1, 2, ... in the validation batches (repeats are dropped by evaluate)."""

    def __init__(self, num_rows: int = 3):
        super().__init__()
        self.num_rows = num_rows

    def val_dataloader(self):
        return DataLoader([{"condition": torch.tensor([1 + i % 2])} for i in range(self.num_rows)], batch_size=2)


class Distance(Scorer):
    """Mean |token - prompt id| (lower is better); chance = that of uniform tokens over both prompts."""

    name = "distance"
    higher_is_better = False

    def __init__(self, vocab_size: int = 8):
        self.vocab_size = vocab_size

    @property
    def chance(self):
        return sum(abs(v - p) for p in (1, 2) for v in range(self.vocab_size)) / (2 * self.vocab_size)

    def __call__(self, frames, condition):
        return (frames.double() - condition[:, :1, None].double()).abs().mean((1, 2))


class ParityMatch(Scorer):
    """Share of tokens whose parity is the prompt's (higher is better; chance 1/2)."""

    name = "parity"
    chance = 0.5

    def __call__(self, frames, condition):
        return (frames % 2 == condition[:, :1, None] % 2).double().mean((1, 2))


class Unanchored(Scorer):
    name = "unanchored"

    def __call__(self, frames, condition):
        return frames.double().mean((1, 2))


class CountEmbedder(nn.Module):
    def __init__(self, vocab_size: int = 8):
        super().__init__()
        self.vocab_size = vocab_size

    def forward(self, frames):
        return F.one_hot(frames, self.vocab_size).double().sum(2).flatten(1)
'''

CONFIG = """
prompts:
  datamodule:
    class_path: my_domain.ParityPrompts
protocol:
  num_frames: 6
  num_samples: 3
  num_seeds: 2
  num_selection_seeds: 2
scorers:
  - class_path: my_domain.Distance
  - class_path: my_domain.ParityMatch
embedder:
  class_path: my_domain.CountEmbedder
reward_embedder:
  class_path: lightning_cfgrl.embedders.TokenHistogramEmbedder
  init_args: {vocab_size: 8}
candidates:
  base: base.ckpt
  guidance_scales: [1.0, 3.0]
  temperatures: [0.7]
  top_ps: [0.9]
  distilled: {q: other.ckpt, d: base.ckpt}
  quality_model: q
  diversity_model: d
  merged_dir: merged
  placebo: other.ckpt
output:
  out: out
  log_dir: out/tb
  progress: false
"""


def tiny_checkpoint(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    generator = AudioTokenTransformer(**TINY)
    state = {f"generator.{k}": v for k, v in generator.state_dict().items()}
    atomic_save({"state_dict": state, "hyper_parameters": {"generator": generator.spec()}}, path)
    return path


@pytest.fixture
def domain_dir(tmp_path: Path) -> Path:
    """tmp_path holding my_domain.py, eval.yaml, two tiny checkpoints and their merge (cwd-relative)."""
    from lightning_cfgrl.cli.merge import merge_checkpoints

    (tmp_path / "my_domain.py").write_text(DOMAIN)
    (tmp_path / "eval.yaml").write_text(CONFIG)
    tiny_checkpoint(tmp_path / "base.ckpt", 0)
    tiny_checkpoint(tmp_path / "other.ckpt", 1)
    merge_checkpoints(
        str(tmp_path / "other.ckpt"), str(tmp_path / "base.ckpt"), [0.0, 0.5, 1.0], str(tmp_path / "merged")
    )
    return tmp_path


def _refuse_constant(constant: str) -> None:
    raise AssertionError(f"results.json holds the non-standard JSON constant {constant}")


def test_custom_domain_from_yaml_outside_the_package(domain_dir):
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(domain_dir), str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    cmd = [sys.executable, "-m", "lightning_cfgrl.cli.main", "evaluate", "--config", "eval.yaml"]
    done = subprocess.run(cmd, cwd=domain_dir, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = domain_dir / "out"
    saved = json.loads((out / "results.json").read_text(), parse_constant=_refuse_constant)  # strict JSON

    settings = saved["settings"]
    chance = sum(abs(v - p) for p in (1, 2) for v in range(8)) / 16
    assert settings["quality"] == "distance" and settings["higher_is_better"] is False
    assert settings["chance"] == pytest.approx(chance) and settings["reference_point"] == [
        pytest.approx(chance),
        0.0,
    ]
    assert settings["num_prompts"] == 2  # 3 validation rows, 2 distinct prompts
    assert settings["evaluation_seeds"] == evaluation_seeds(2) and settings[
        "selection_seeds"
    ] == selection_seeds(2)
    assert set(settings["embedders"]) == {"diversity", "reward_diversity"}
    assert saved["machine"]["torch_version"] == torch.__version__

    results = {r["name"]: r for r in saved["results"]}
    assert list(results) == [
        "CFG g=1", "CFG g=3", "temperature 0.7", "top-p 0.9", "distilled q", "distilled d",
        "merged lambda=0", "merged lambda=0.5", "merged lambda=1", "placebo",
    ]  # fmt: skip
    assert (
        results["CFG g=3"]["forward_passes_per_token"] == 2
        and results["distilled q"]["forward_passes_per_token"] == 1
    )
    for r in results.values():
        assert r["seeds"] == evaluation_seeds(2) and set(r["metrics"]) == {
            "distance",
            "parity",
            "diversity",
            "reward_diversity",
        }
    # merged lambda=0 is the quality source (other.ckpt), lambda=1 the diversity source (base.ckpt)
    assert results["merged lambda=0"]["per_seed"] == results["distilled q"]["per_seed"]
    assert results["merged lambda=1"]["per_seed"] == results["CFG g=1"]["per_seed"]

    # fronts and hypervolumes: lower distance is better, so the quality axis is -distance
    def oriented(name, metric="diversity"):
        return (-results[name]["metrics"]["distance"][0], results[name]["metrics"][metric][0])

    cfg = [oriented("CFG g=1"), oriented("CFG g=3")]
    expected_hv = hypervolume_2d([cfg[i] for i in pareto_front(cfg)], (-chance, 0.0))
    assert saved["hypervolumes"]["diversity"]["cfg"] == pytest.approx(expected_hv, abs=1e-12)

    # the best temperature/top-p point is the best on the selection seeds
    selection = saved["selection"]
    assert [r["seeds"] for r in selection["results"]] == [selection_seeds(2)] * 2
    best = min(selection["results"], key=lambda r: r["metrics"]["distance"][0])["name"]
    assert selection["best_temperature_top_p"] == best

    claims = {(c["claim"], c["metric"]): c for c in saved["claims"]}
    expected = {("a", "distance"), ("a_vs_sampling", "distance")}
    expected |= {
        (k, m) for k in ("b", "b_vs_placebo", "c", "c_vs_sampling") for m in ("diversity", "reward_diversity")
    }
    assert set(claims) == expected
    q, ref = results["distilled q"]["per_seed"]["distance"], results["CFG g=3"]["per_seed"]["distance"]
    differences = [-(m - chance) - 0.95 * -(r - chance) for m, r in zip(q, ref, strict=True)]
    assert claims[("a", "distance")]["margin"] == pytest.approx(sum(differences) / 2, abs=1e-12)
    placebo_gap = [
        d - p
        for d, p in zip(
            results["distilled d"]["per_seed"]["diversity"],
            results["placebo"]["per_seed"]["diversity"],
            strict=True,
        )
    ]
    assert claims[("b_vs_placebo", "diversity")]["margin"] == pytest.approx(sum(placebo_gap) / 2, abs=1e-12)

    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["candidate"] for r in rows] == list(results)
    assert float(rows[1]["distance_mean"]) == pytest.approx(
        results["CFG g=3"]["metrics"]["distance"][0], rel=1e-5
    )
    image = matplotlib.image.imread(out / "quality_diversity.png")  # a decodable RGB(A) picture
    assert image.ndim == 3 and image.shape[2] in (3, 4) and min(image.shape[:2]) >= 300
    assert list((out / "tb").glob("events.out.tfevents.*"))
    assert "| a | distilled q reaches 95 % of the CFG reference" in done.stdout


# --------------------------------------------------------------------------- validation before sampling


class SamplingStarted(Exception):
    pass


@pytest.fixture
def no_sampling(monkeypatch):
    """Replace the sampler: any call is recorded and stops the run."""
    calls = []

    def sampler(*args, **kwargs):
        calls.append(args)
        raise SamplingStarted

    monkeypatch.setattr("lightning_cfgrl.eval.candidates.sample", sampler)
    return calls


@pytest.fixture
def in_domain(domain_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(domain_dir))
    monkeypatch.chdir(domain_dir)
    (domain_dir / "garbage.ckpt").write_bytes(b"not a checkpoint at all")
    (domain_dir / "a_file").write_text("x")
    (domain_dir / "empty_dir").mkdir()
    return domain_dir


BAD = {
    "unknown model name": (
        ["--candidates.quality_model", "nope"],
        "candidates.quality_model='nope' is not a name in candidates.distilled ['d', 'q']",
    ),
    "reference not in sweep": (
        ["--candidates.guidance_scales", "[1.0, 2.0]"],
        "candidates.cfg_reference=3 is not in candidates.guidance_scales [1.0, 2.0]",
    ),
    "no candidates": (
        [
            "--candidates.base=null",
            "--candidates.distilled={}",
            "--candidates.quality_model=null",
            "--candidates.diversity_model=null",
            "--candidates.merged_dir=null",
            "--candidates.placebo=null",
            "--candidates.guidance_scales=[]",
            "--candidates.temperatures=[]",
            "--candidates.top_ps=[]",
        ],
        "no candidates to evaluate",
    ),
    "out is a file": (["--output.out", "a_file"], "output.out='a_file' is a file; expected a folder"),
    "log_dir is a file": (["--output.log_dir", "a_file"], "output.log_dir='a_file' is a file"),
    "unreadable checkpoint": (
        ["--candidates.placebo", "garbage.ckpt"],
        "cannot load the generator of checkpoint 'garbage.ckpt' (candidates placebo)",
    ),
    "missing checkpoint": (
        ["--candidates.placebo", "missing.ckpt"],
        "checkpoint 'missing.ckpt' (candidates placebo) does not exist",
    ),
    "one seed": (
        ["--protocol.num_seeds", "1"],
        "protocol.num_seeds must be an integer in [2, 1000] to report standard errors, got 1",
    ),
    "one sample": (["--protocol.num_samples", "1"], "protocol.num_samples must be an integer >= 2, got 1"),
    "unknown quality": (
        ["--protocol.quality", "nope"],
        "protocol.quality must be the name of one of the scorers ['distance', 'parity'], got 'nope'",
    ),
    "no chance level": (['--scorers=[{"class_path": "my_domain.Unanchored"}]'], "has no chance level"),
    "too many frames": (
        ["--protocol.num_frames", "100"],
        "num_frames=100 needs 101 decoding steps, more than the max_steps=9",
    ),
    "bad temperature": (
        ["--candidates.temperatures", "[0.0]"],
        "temperature must be a finite number > 0, got 0.0",
    ),
    "duplicate guidance": (
        ["--candidates.guidance_scales", "[1.0, 3.0, 3.0]"],
        "candidates.guidance_scales has duplicates",
    ),
    "no base for sweeps": (["--candidates.base=null"], "candidates.base is not set"),
    "two prompt sources": (
        ["--prompts.values", "[[1]]"],
        "give exactly one prompt source: prompts.datamodule (its held-out prompts), prompts.file (a "
        ".json/.yaml/.safetensors file) or prompts.values (the prompts themselves), got "
        "prompts.datamodule and prompts.values",
    ),
    "missing prompt file": (
        ["--prompts.datamodule=null", "--prompts.file", "nothere.json"],
        "prompt file 'nothere.json' does not exist",
    ),
    "empty merged dir": (["--candidates.merged_dir", "empty_dir"], "holds no merged checkpoints"),
    "fraction": (["--protocol.fraction", "0"], "protocol.fraction must be in (0, 1], got 0"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_every_bad_argument_fails_before_the_first_sample(case, in_domain, no_sampling, capsys):
    args, message = BAD[case]
    code = evaluate_main(["--config", "eval.yaml", *args])
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and no_sampling == []
    assert last_line.startswith("cfgrl evaluate: error:") and message in last_line, last_line


def test_a_valid_configuration_reaches_sampling(in_domain, no_sampling):
    with pytest.raises(SamplingStarted):
        evaluate_main(["--config", "eval.yaml"])
    assert len(no_sampling) == 1


# --------------------------------------------------------------------------- Python API, built-in domain


class _Fixed(Scorer):
    name, chance = "fixed", 0.0

    def __call__(self, frames, condition):
        return frames.double().mean((1, 2))


def _result(name, family, quality, seeds):
    per_seed = {"fixed": list(quality), "diversity": [0.5] * len(quality)}
    metrics = {k: (sum(v) / len(v), 0.01) for k, v in per_seed.items()}
    return CandidateResult(name, metrics, 1, 1.0, per_seed, list(seeds), family, {})


def test_best_temperature_point_is_chosen_on_selection_seeds(tmp_path):
    from lightning_cfgrl.embedders import TokenHistogramEmbedder

    ckpt = str(tiny_checkpoint(tmp_path / "base.ckpt", 0))
    evaluation = Evaluation(
        scorers=[_Fixed()],
        embedder=TokenHistogramEmbedder(8),
        candidates=Candidates(
            base=ckpt,
            guidance_scales=[3.0],
            temperatures=[0.5, 0.9],
            top_ps=[],
            distilled={"q": ckpt},
            quality_model="q",
        ),
        protocol=EvaluationProtocol(num_frames=4),
        prompts=PromptSource(values=[[1], [2]]),
        output=EvaluationOutput(out=None, progress=False),
    )
    seeds, chosen_on = evaluation.seeds, evaluation.selection_seeds
    assert chosen_on == selection_seeds(3) and not set(chosen_on) & set(seeds)
    # temperature 0.9 wins on the evaluation seeds, 0.5 on the selection seeds: 0.5 must be the one tested
    results = [
        _result("CFG g=3", "cfg", [3.0] * 5, seeds),
        _result("temperature 0.5", "temperature", [1.0] * 5, seeds),
        _result("temperature 0.9", "temperature", [2.0] * 5, seeds),
        _result("distilled q", "distilled", [2.9] * 5, seeds),
    ]
    results[-1].setting = {"roles": ["quality_model"]}
    selection = [
        _result("temperature 0.5", "temperature", [2.0] * 3, chosen_on),
        _result("temperature 0.9", "temperature", [1.0] * 3, chosen_on),
    ]
    report = evaluation.summarize(results, selection)
    assert report.best_sampling == "temperature 0.5"
    claim = next(c for c in report.claims if c.claim == "a_vs_sampling")
    assert claim.margin == pytest.approx(2.9 - 0.95 * 1.0) and "temperature 0.5" in claim.statement


@pytest.mark.slow  # trains a model
def test_builtin_domain_evaluation_in_python(pretrained_base, tmp_path):
    from lightning_cfgrl.embedders import TokenHistogramEmbedder
    from lightning_cfgrl.experiments import LogLikelihood, PromptAdherence, SyntheticPromptDataModule

    ckpt = tmp_path / "base.ckpt"
    state = {f"generator.{k}": v for k, v in pretrained_base.state_dict().items()}
    atomic_save({"state_dict": state, "hyper_parameters": {"generator": pretrained_base.spec()}}, ckpt)
    out = tmp_path / "eval"
    report = Evaluation(
        scorers=[PromptAdherence(), LogLikelihood()],
        embedder=TokenHistogramEmbedder(32),
        candidates=Candidates(base=str(ckpt), guidance_scales=[1.0, 3.0], temperatures=[0.6], top_ps=[]),
        protocol=EvaluationProtocol(num_frames=32, num_samples=4, num_seeds=2),
        prompts=PromptSource(datamodule=SyntheticPromptDataModule(), max_prompts=6),
        output=EvaluationOutput(out=str(out), progress=False),
    ).run()
    assert [r.name for r in report.results] == ["CFG g=1", "CFG g=3", "temperature 0.6"]
    cfg1, cfg3 = report.results[0], report.results[1]
    assert cfg3.forward_passes_per_token == 2 and cfg1.forward_passes_per_token == 1
    assert cfg3.mean("adherence") > cfg1.mean("adherence")  # guidance helps adherence
    assert report.settings["chance"] == pytest.approx(-math.log(48))
    saved = json.loads((out / "results.json").read_text(), parse_constant=_refuse_constant)
    assert saved["settings"]["num_prompts"] == 6 and saved["hypervolumes"]["diversity"][
        "cfg"
    ] == pytest.approx(report.hypervolumes["diversity"]["cfg"])


def test_builtin_preset_names_the_synthetic_domain():
    cfg = build_parser().parse_args(["--config", str(ROOT / "examples/configs/evaluate.yaml")])
    assert cfg.prompts.datamodule.class_path == "lightning_cfgrl.experiments.SyntheticPromptDataModule"
    assert [s.class_path for s in cfg.scorers][:2] == [
        "lightning_cfgrl.experiments.PromptAdherence",
        "lightning_cfgrl.experiments.LogLikelihood",
    ]
    assert cfg.candidates.cfg_reference == 3.0 and cfg.candidates.quality_model in cfg.candidates.distilled
    assert cfg.protocol.num_seeds >= 5 and cfg.protocol.quality == "adherence"


def test_eval_and_cli_do_not_import_the_experiments():
    package = Path(lightning_cfgrl.__file__).parent
    offending = []
    for path in sorted([*package.glob("eval/*.py"), *package.glob("cli/*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            offending += [f"{path.name}: {n}" for n in names if n.startswith("lightning_cfgrl.experiments")]
    assert not offending, offending


def _evaluate_output(args: list[str], capsys, monkeypatch) -> str:
    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps at the terminal's width: a plain 80 columns
    with pytest.raises(SystemExit) as exit_:
        evaluate_main(args)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_help_is_one_page_that_documents_every_option(capsys, monkeypatch):
    """``cfgrl evaluate --help`` was 1080 lines (every ``nn.Module`` of torch as a possible embedder)."""
    text = _evaluate_output(["--help"], capsys, monkeypatch)
    assert len(text.splitlines()) <= 200, len(text.splitlines())
    assert "known subclasses" not in text and "torch.nn.Conv1d" not in text
    flat = " ".join(text.split())
    args = Evaluation.__doc__.split("Args:")[1]
    docs = dict(re.findall(r"^ {8}(\w+): (.+)$", args, flags=re.M))
    assert set(docs) == set(inspect.signature(Evaluation).parameters)  # every argument has its doc
    for name, doc in docs.items():
        assert f"--{name} " in text, name  # the option ...
        assert " ".join(doc.replace("``", "`").split()[:3]) in flat, name  # ... with its doc
    for field in dataclasses.fields(Candidates):
        assert f"--candidates.{field.name} " in text, field.name
    groups = {"protocol": EvaluationProtocol, "prompts": PromptSource, "output": EvaluationOutput}
    for group, cls in groups.items():  # each settings group's fields, with their docs
        documented = {p.arg_name: p.description for p in docstring_parser.parse(cls.__doc__).params}
        assert set(documented) == {f.name for f in dataclasses.fields(cls)}, cls
        for name, doc in documented.items():
            assert f"--{group}.{name} " in text, (group, name)
            assert " ".join(doc.replace("``", "`").split()[:3]) in flat, (group, name)
    assert "--embedder.help ContrastiveTokenEmbedder" in text  # the way to a nested class's options


@pytest.mark.parametrize(
    "args, option",
    [
        (["--embedder.help", "ContrastiveTokenEmbedder"], "--embedder.checkpoint"),
        (
            ["--reward_embedder.help=lightning_cfgrl.embedders.TokenHistogramEmbedder"],
            "--reward_embedder.ngram",
        ),
        (["--prompts.datamodule.help", "PromptDataModule"], "--prompts.datamodule.split.heldout_fraction"),
        (["--scorers.help", "lightning_cfgrl.experiments.PromptAdherence"], "--scorers.domain"),
    ],
)
def test_nested_help_lists_the_options_of_one_class(args, option, capsys, monkeypatch):
    assert option in _evaluate_output(args, capsys, monkeypatch)


def test_settings_groups_name_the_group_in_their_errors(tmp_path):
    """The groups of ``Evaluation`` check their fields where they are built, naming ``group.field``."""
    with pytest.raises(ValueError, match=r"protocol.num_frames must be an integer >= 1, got 0"):
        EvaluationProtocol(num_frames=0)
    with pytest.raises(ValueError, match=r"protocol.reference must be two finite numbers"):
        EvaluationProtocol(num_frames=4, reference=(0.0, float("nan")))
    with pytest.raises(ValueError, match=r"got prompts.file and prompts.values"):
        PromptSource(file="prompts.json", values=[[1]]).load()
    with pytest.raises(ValueError, match=r"prompts.max_prompts must be >= 1 or None, got 0"):
        PromptSource(values=[[1]], max_prompts=0).load()
    assert PromptSource(values=[[1], [2], [3]], max_prompts=2).load().tolist() == [[1], [2]]
    ckpt = str(tiny_checkpoint(tmp_path / "base.ckpt", 0))
    from lightning_cfgrl.embedders import TokenHistogramEmbedder

    arguments = dict(
        scorers=[_Fixed()],
        embedder=TokenHistogramEmbedder(8),
        candidates=Candidates(base=ckpt, guidance_scales=[1.0, 3.0], temperatures=[], top_ps=[]),
        protocol={"num_frames": 4},  # a dict of the group's fields is built into it
        prompts={"values": [[1], [2]]},
        output={"out": None, "progress": False},
    )
    evaluation = Evaluation(**arguments)
    assert evaluation.protocol == EvaluationProtocol(num_frames=4) and evaluation.out is None
    with pytest.raises(ValueError, match=r"protocol has no setting\(s\) \['seeds'\]"):
        Evaluation(**{**arguments, "protocol": {"num_frames": 4, "seeds": 3}})
    with pytest.raises(TypeError, match="output must be a EvaluationOutput or a dict of its fields"):
        Evaluation(**{**arguments, "output": "runs/eval"})
