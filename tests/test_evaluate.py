"""A tiny end-to-end evaluation: files written, fronts and hypervolumes consistent with the numbers."""

import csv
import json
import subprocess
import sys

import matplotlib.image
import pytest

from lightning_cfgrl.cli.evaluate import run_evaluation
from lightning_cfgrl.eval.pareto import hypervolume_2d, pareto_front
from lightning_cfgrl.io.checkpoints import atomic_save


@pytest.fixture
def base_ckpt(pretrained_base, tmp_path):
    path = tmp_path / "base.ckpt"
    state = {f"generator.{k}": v for k, v in pretrained_base.state_dict().items()}
    atomic_save({"state_dict": state, "hyper_parameters": {"generator": pretrained_base.spec()}}, path)
    return path


def test_tiny_evaluation_writes_consistent_outputs(base_ckpt, tmp_path):
    out = tmp_path / "eval"
    report = run_evaluation(
        str(base_ckpt),
        students={"copy": str(base_ckpt)},
        guidance_scales=(1.0, 3.0),
        temperatures=(0.6,),
        top_ps=(),
        num_samples=4,
        num_seeds=2,
        out=str(out),
        progress=False,
    )
    names = [r.name for r in report.results]
    assert names == ["CFG g=1", "CFG g=3", "temperature 0.6", "distilled copy"]
    cfg1, cfg3 = report.results[0], report.results[1]
    assert cfg3.forward_passes_per_token == 2 and cfg1.forward_passes_per_token == 1
    assert cfg3.metrics["adherence"][0] > cfg1.metrics["adherence"][0]  # guidance helps adherence

    saved = json.loads((out / "results.json").read_text())
    points = [(r["metrics"]["adherence"][0], r["metrics"]["diversity"][0]) for r in saved["results"][:2]]
    expected = hypervolume_2d([points[i] for i in pareto_front(points)], tuple(saved["reference_point"]))
    assert saved["hypervolumes"]["cfg"] == pytest.approx(expected)
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["candidate"] for r in rows] == names and float(rows[1]["adherence_mean"]) == pytest.approx(
        cfg3.metrics["adherence"][0], rel=1e-5
    )
    image = matplotlib.image.imread(out / "quality_diversity.png")  # a decodable RGB(A) picture
    assert image.ndim == 3 and image.shape[2] in (3, 4) and min(image.shape[:2]) >= 300
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_evaluate_cli_rejects_bad_values(base_ckpt, tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "lightning_cfgrl.cli.main",
        "evaluate",
        "--base",
        str(base_ckpt),
        "--num_seeds",
        "1",
        "--out",
        str(tmp_path / "e"),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert (
        result.returncode != 0 and "num_seeds must be >= 2 to report standard errors, got 1" in result.stderr
    )
