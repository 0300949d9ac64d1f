"""The benchmark scripts run end to end on tiny sizes and write their JSON (no timings are asserted)."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers.compiler import needs_cxx

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(autouse=True)
def keep_torch_threads():
    # the scripts set torch's thread count (--threads 1 here: tiny ops, no thread hand-offs)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_inference_cost_records_both_modes(tmp_path):
    out = tmp_path / "inference.json"
    result = load("inference_cost").main(
        [
            "--in-process",
            "--threads",
            "1",
            "--dim",
            "16",
            "--layers",
            "1",
            "--heads",
            "2",
            "--codebooks",
            "2",
            "--vocab",
            "8",
            "--batches",
            "1",
            "2",
            "--new-tokens",
            "4",
            "--out",
            str(out),
        ]
    )
    saved = json.loads(out.read_text())
    assert saved["machine"]["torch_version"] and saved["machine"]["cpu_model"]
    keys = {(r["mode"], r["batch"], r["new_tokens"]) for r in saved["records"]}
    assert keys == {(m, b, 4) for m in ("cfg", "distilled", "floor", "floor_2b") for b in (1, 2)}
    assert all(r["floor_ratio_2b_over_b"] > 0 for r in saved["ratios"])
    assert {"tokens_per_s", "latency_s", "peak_mem_mb"} <= set(saved["records"][0])
    assert len(result["ratios"]) == 2


def test_sampler_reports_overhead_against_floor(tmp_path):
    out = tmp_path / "sampler.json"
    load("sampler").main(
        [
            "--no-hf",
            "--threads",
            "1",
            "--dim",
            "16",
            "--layers",
            "1",
            "--heads",
            "2",
            "--vocab",
            "8",
            "--batch",
            "2",
            "--new-tokens",
            "4",
            "--repeats",
            "1",
            "--out",
            str(out),
        ]
    )
    saved = json.loads(out.read_text())
    assert {r["name"] for r in saved["records"]} == {"floor", "sampler", "floor_cfg", "sampler_cfg"}
    assert "overhead_vs_floor" in saved["summary"]


def test_sampler_times_a_baseline_tree_and_checks_its_tokens(tmp_path):
    out = tmp_path / "sampler.json"
    tiny = ["--no-hf", "--threads", "1", "--dim", "16", "--layers", "1", "--heads", "2", "--vocab", "8"]
    tree = str(BENCHMARKS.parent)  # this tree as its own baseline: same tokens by construction
    load("sampler").main(
        [*tiny, "--codebooks", "2", "--batch", "2", "--new-tokens", "4", "--repeats", "1"]
        + ["--baseline", tree, "--out", str(out)]
    )
    saved = json.loads(out.read_text())
    assert {r["name"] for r in saved["records"]} >= {"baseline_sampler", "baseline_floor_cfg"}
    assert saved["config"]["baseline_same_tokens"] == {"plain": True, "cfg": True}
    assert saved["summary"]["speedup_sampler_vs_baseline"] > 0


@pytest.mark.slow
@needs_cxx
def test_sampler_times_the_compiled_path_and_checks_its_tokens(tmp_path):
    """Slow: two traces by torch.compile (plain and CFG batch), ~10 s each on a 2-core CPU."""
    out = tmp_path / "sampler.json"
    tiny = ["--no-hf", "--threads", "1", "--dim", "16", "--layers", "1", "--heads", "2", "--vocab", "8"]
    load("sampler").main(
        [*tiny, "--batch", "2", "--new-tokens", "4", "--repeats", "1", "--compile", "--out", str(out)]
    )
    saved = json.loads(out.read_text())
    assert {r["name"] for r in saved["records"]} >= {"sampler_compiled", "sampler_compiled_cfg"}
    assert saved["config"]["same_tokens_compiled"] and saved["config"]["same_tokens_compiled_cfg"]
    assert saved["summary"]["compile_s"] > 0 and saved["summary"]["compiled_speedup_vs_sampler"] > 0


def test_vs_trl_runs_both_trainers(tmp_path):
    pytest.importorskip("trl")
    pytest.importorskip("datasets")
    out = tmp_path / "vs_trl.json"
    args = ["--threads", "1", "--dim", "16", "--layers", "1", "--heads", "2", "--vocab", "16", "--batch", "2"]
    args += ["--prompt", "2", "--completion", "4", "--steps", "2", "--rounds", "1"]
    # a subprocess: importing TRL here may hide a torchaudio that cannot load (sys.modules), which
    # would leak into later tests that import encodec
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(BENCHMARKS.parent), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "vs_trl.py"),
            *args,
            "--tmp",
            str(tmp_path / "trl"),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    saved = json.loads(out.read_text())
    assert [r["name"] for r in saved["records"]] == ["trl_gkd", "trl_gkd_defaults", "cfgrl_g1", "cfgrl_g3"]
    assert saved["config"]["trl_version"] and saved["machine"]["load_average_1_5_15"] is not None
    assert all(0 <= r["generation_share"] <= 1 and r["trained_tokens_per_s"] > 0 for r in saved["records"])


@pytest.mark.filterwarnings("ignore")
def test_train_step_times_every_phase(tmp_path):
    out = tmp_path / "train.json"
    load("train_step").main(
        [
            "--in-process",
            "--threads",
            "1",
            "--lengths",
            "4",
            "--sizes",
            "S",
            "--size-frames",
            "4",
            "--prompts",
            "2",
            "--repeats",
            "1",
            "--out",
            str(out),
        ]
    )
    saved = json.loads(out.read_text())
    distill = [r for r in saved["records"] if r["kind"] == "distill"]
    assert {r["sweep"] for r in distill} == {"example", "length", "size"}
    assert {"rollout", "student_forward", "teacher", "loss_backward", "optimizer"} <= set(
        distill[0]["phases_s"]
    )
    for r in distill:  # the derived throughput is the measured tokens over the measured step time
        assert r["trained_tokens_per_s"] == pytest.approx(r["trained_tokens"] / r["step_s"], rel=1e-9)


@pytest.mark.filterwarnings("ignore")
def test_musicgen_memory_compares_full_copy_teacher_and_lora(tmp_path):
    pytest.importorskip("transformers")
    from lightning_cfgrl.adapters.peft import import_peft

    try:
        import_peft()
    except ImportError:
        pytest.skip("peft is not installed")
    out = tmp_path / "musicgen.json"
    tiny = ["--hidden", "32", "--layers", "1", "--heads", "2", "--ffn", "64", "--vocab", "64"]
    load("musicgen_memory").main(
        ["--in-process", "--threads", "1", *tiny, "--steps", "2", "--frames", "3", "--prompts", "1"]
        + ["--configs", "full", "lora_gc", "--out", str(out)]
    )
    saved = json.loads(out.read_text())
    full, lora = saved["results"]
    assert (full["config"], lora["config"]) == ("full", "lora_gc") and len(full["step_times_s"]) == 2
    assert lora["trainable_params"] < full["trainable_params"]
    # the full-copy run saves the teacher and the whole student; the LoRA run neither
    assert full["checkpoint_parts_mb"]["teacher"] > 0 == lora["checkpoint_parts_mb"]["teacher"]
    assert lora["checkpoint_tensor_mb"] < full["checkpoint_tensor_mb"] / 5
    assert lora["checkpoint_file_mb"] is not None and "machine" in saved


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
def test_gpu_suite_runs_every_section_at_tiny_sizes_on_cpu(tmp_path):
    """Slow: every benchmark of the GPU suite at tiny sizes, plus an FSDP subprocess (~1-2 min)."""
    pytest.importorskip("transformers")
    out = tmp_path / "suite.json"
    load("gpu_suite").main(["--tiny", "--threads", "1", "--out", str(out)])
    saved = json.loads(out.read_text())
    sections = saved["sections"]
    assert list(sections) == list(load("gpu_suite").SECTIONS)
    failed = {name: s["error"] for name, s in sections.items() if s["status"] == "failed"}
    assert not failed
    # the CUDA-only part is skipped on the CPU, saying why; every other section ran or says why not
    assert sections["compiled_decode"] == {**sections["compiled_decode"], "status": "skipped"}
    assert "CUDA" in sections["compiled_decode"]["reason"]
    for name in (
        "cfg_vs_distilled",
        "sampler_vs_floor_vs_hf",
        "musicgen_vs_hf",
        "adapter_rollout",
        "fsdp_smoke",
    ):
        assert sections[name]["status"] == "ok", (name, sections[name])
    assert sections["adapter_rollout"]["result"]["config"]["same_tokens_cfg"] is True
    assert sections["fsdp_smoke"]["result"]["steps"] == 3
    assert saved["machine"]["device"] == "cpu" and "commit" in saved and "dirty" in saved


def test_adapter_rollout_times_incremental_against_its_floor_and_recompute(tmp_path):
    out = tmp_path / "adapter.json"
    tiny = [
        "--threads",
        "1",
        "--dim",
        "16",
        "--layers",
        "1",
        "--codebooks",
        "2",
        "--vocab",
        "8",
        "--batch",
        "2",
    ]
    load("adapter_rollout").main(
        [
            *tiny,
            "--frames",
            "4",
            "6",
            "--rounds",
            "1",
            "--recompute-max",
            "4",
            "--check-frames",
            "3",
            "--out",
            str(out),
        ]
    )
    saved = json.loads(out.read_text())
    assert {(r["frames"], r["name"]) for r in saved["records"]} == {
        (4, "recompute"),
        *((t, n) for t in (4, 6) for n in ("floor", "sampler", "floor_cfg", "sampler_cfg")),
    }
    assert set(saved["summary"]["4"]) >= {"sampler_over_floor", "recompute_over_incremental_best"}
    assert "recompute_over_incremental" not in saved["summary"]["6"]
    assert saved["config"]["same_tokens_plain"] and saved["config"]["same_tokens_cfg"]
    assert saved["commit"] is None or len(saved["commit"]) == 40


@pytest.mark.filterwarnings("ignore")
def test_musicgen_rollout_compares_with_hf_generate(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("scipy")
    out = tmp_path / "musicgen.json"
    load("musicgen_rollout").main(
        ["--threads", "1", "--shapes", "tiny", "--frames", "3", "--batch", "2", "--rounds", "1"]
        + ["--draws", "50", "--check-frames", "2", "--out", str(out)]
    )
    saved = json.loads(out.read_text())
    names = {r["name"] for r in saved["records"]}
    assert names == {"ours", "hf", "floor", "ours_cfg", "hf_cfg", "floor_cfg"}
    assert saved["summary"]["tiny"]["speedup_vs_hf"] > 0
    assert [c["codebooks"] for c in saved["distribution_checks"]] == [2, 2, 4, 4, 4]
