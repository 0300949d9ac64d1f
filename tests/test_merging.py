"""Model merging: tensor math, state-dict validation, merged files, ModelMergeCallback and `cfgrl merge`."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_cfgrl.callbacks.merge import ModelMergeCallback
from lightning_cfgrl.cli.merge import merge_main
from lightning_cfgrl.merging import streaming as merging
from lightning_cfgrl.merging.streaming import (
    MergeError,
    MergeOutput,
    iter_merged,
    lambda_tag,
    lerp,
    merge_state_dicts,
    slerp,
    write_merged,
)


def _randn(*shape: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def _states(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    anchor = {"w": _randn(4, 3, seed=seed), "b": _randn(3, seed=seed + 1), "steps": torch.tensor(5)}
    current = {"w": _randn(4, 3, seed=seed + 2), "b": _randn(3, seed=seed + 3), "steps": torch.tensor(9)}
    return anchor, current


# --------------------------------------------------------------------------------------- tensor math


def test_lerp_endpoints_bit_exact_and_midpoint_is_mean() -> None:
    a = torch.tensor([-0.0, 1e-40, 3.0, -2.5, float("1e30")])
    b = torch.tensor([0.0, -7.0, 3.0000002, 4.0, float("-1e30")])
    for fn in (lerp, slerp):
        assert torch.equal(fn(a, b, 0.0), a) and torch.equal(fn(a, b, 0.0).signbit(), a.signbit())
        assert torch.equal(fn(a, b, 1.0), b) and torch.equal(fn(a, b, 1.0).signbit(), b.signbit())
    x, y = _randn(1000, seed=1), _randn(1000, seed=2)
    assert torch.equal(lerp(x, y, 0.5), (x + y) / 2)


def test_lerp_matches_float64_reference_and_keeps_dtype() -> None:
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        a, b = _randn(50, seed=3, dtype=dtype), _randn(50, seed=4, dtype=dtype)
        got = lerp(a, b, 0.3)
        reference = (0.7 * a.double() + 0.3 * b.double()).to(dtype)
        assert got.dtype == dtype
        torch.testing.assert_close(got, reference, rtol=0, atol=float(torch.finfo(dtype).eps) * 4)


def _slerp_reference(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Textbook SLERP in numpy: angle from the normalised vectors, weights on the raw ones."""
    cos_angle = np.clip(a.ravel() @ b.ravel() / (np.linalg.norm(a) * np.linalg.norm(b)), -1.0, 1.0)
    angle = np.arccos(cos_angle)
    return (np.sin((1 - t) * angle) * a + np.sin(t * angle) * b) / np.sin(angle)


@pytest.mark.parametrize("t", [0.1, 0.5, 0.9, 1.7, -0.4])
def test_slerp_matches_numpy_reference(t: float) -> None:
    a64, b64 = _randn(6, 5, seed=5, dtype=torch.float64), _randn(6, 5, seed=6, dtype=torch.float64) * 3
    expected = _slerp_reference(a64.numpy(), b64.numpy(), t)
    np.testing.assert_allclose(slerp(a64, b64, t).numpy(), expected, rtol=1e-12, atol=1e-12)
    got32 = slerp(a64.float(), b64.float(), t)
    assert got32.dtype == torch.float32 and got32.shape == (6, 5)
    np.testing.assert_allclose(
        got32.numpy(),
        _slerp_reference(a64.float().double().numpy(), b64.float().double().numpy(), t),
        rtol=1e-6,
        atol=1e-6,
    )
    assert not torch.allclose(slerp(a64, b64, t), lerp(a64, b64, t))  # the test can tell them apart


def test_slerp_of_unit_vectors_stays_on_the_sphere() -> None:
    a = torch.tensor([1.0, 0.0], dtype=torch.float64)
    b = torch.tensor([0.0, 1.0], dtype=torch.float64)
    mid = slerp(a, b, 0.5)
    torch.testing.assert_close(mid, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)], dtype=torch.float64))


def test_slerp_falls_back_to_lerp_when_degenerate() -> None:
    a = _randn(100, seed=7)
    cases = {
        "parallel": 2.0 * a,
        "antiparallel": -3.0 * a,
        "nearly parallel": a + 1e-6 * _randn(100, seed=8),
        "zero": torch.zeros(100),
    }
    for name, b in cases.items():
        for t in (0.25, 0.5):
            assert torch.equal(slerp(a, b, t), lerp(a, b, t)), name
            assert torch.isfinite(slerp(b, a, t)).all(), name
    one = torch.tensor([2.0])  # a single number is always colinear
    assert torch.equal(slerp(one, torch.tensor([5.0]), 0.5), torch.tensor([3.5]))


# ------------------------------------------------------------------------------------- state dicts


def test_merge_state_dicts_endpoints_mean_and_integer_buffers() -> None:
    anchor, current = _states()
    for method in ("lerp", "slerp"):
        at0 = merge_state_dicts(anchor, current, 0.0, method)
        at1 = merge_state_dicts(anchor, current, 1.0, method)
        assert all(torch.equal(at0[k], anchor[k]) for k in anchor)
        assert all(torch.equal(at1[k], current[k]) for k in current)
        assert at0["w"].data_ptr() != anchor["w"].data_ptr()  # copies, not aliases
    mid = merge_state_dicts(anchor, current, 0.5)
    assert torch.equal(mid["w"], (anchor["w"] + current["w"]) / 2)
    assert torch.equal(mid["b"], (anchor["b"] + current["b"]) / 2)
    for lam in (0.25, 0.5, 0.75):
        assert merge_state_dicts(anchor, current, lam, "slerp")["steps"].item() == 9  # never mixed
    assert list(mid) == ["w", "b", "steps"]


def test_incompatible_state_dicts_list_the_mismatches() -> None:
    anchor, current = _states()
    with pytest.raises(
        MergeError,
        match=r"1 key\(s\) only in the anchor: \['b'\].*1 key\(s\) only in the current model: \['c'\]",
    ):
        merge_state_dicts(anchor, {**{k: v for k, v in current.items() if k != "b"}, "c": torch.ones(1)}, 0.5)
    with pytest.raises(MergeError, match=r"shape mismatch.*w: \(4, 3\) vs \(3, 4\)"):
        merge_state_dicts(anchor, {**current, "w": current["w"].T.contiguous()}, 0.5)
    with pytest.raises(MergeError, match=r"dtype mismatch.*b: torch.float32 vs torch.float16"):
        merge_state_dicts(anchor, {**current, "b": current["b"].half()}, 0.5)
    many_a = {f"k{i}": torch.zeros(1) for i in range(8)}
    many_c = {f"k{i}": torch.zeros(2) for i in range(8)}
    with pytest.raises(MergeError, match=r"8 shape mismatch") as info:
        merge_state_dicts(many_a, many_c, 0.5)
    assert "k4:" in str(info.value) and "k5:" not in str(info.value)  # first five only


@pytest.mark.parametrize("lam", [-0.1, 1.5, float("nan"), float("inf")])
def test_lambda_out_of_range(lam: float) -> None:
    anchor, current = _states()
    with pytest.raises(MergeError, match="lambda must"):
        merge_state_dicts(anchor, current, lam)


def test_extrapolation_when_allowed() -> None:
    anchor, current = _states()
    out = merge_state_dicts(anchor, current, 1.5, allow_extrapolation=True)
    expected = (-0.5 * anchor["w"].double() + 1.5 * current["w"].double()).float()
    torch.testing.assert_close(out["w"], expected)
    big = {"w": torch.full((2,), 6e4, dtype=torch.float16)}
    with pytest.raises(MergeError, match="overflows tensor 'w'"):
        merge_state_dicts({"w": -big["w"]}, big, 3.0, allow_extrapolation=True)


def test_non_finite_tensors_are_named() -> None:
    anchor, current = _states()
    bad_anchor = {**anchor, "b": torch.tensor([0.0, float("nan"), 1.0])}
    with pytest.raises(MergeError, match="anchor tensor 'b' has non-finite"):
        merge_state_dicts(bad_anchor, current, 0.5)
    bad_current = {**current, "w": current["w"].clone().fill_(float("inf"))}
    with pytest.raises(MergeError, match="current tensor 'w' has non-finite"):
        merge_state_dicts(anchor, bad_current, 0.0)


def test_iter_merged_validates_before_the_first_tensor() -> None:
    anchor, current = _states()
    with pytest.raises(MergeError, match="method must be one of"):
        iter_merged(anchor, current, 0.5, method="cubic")
    with pytest.raises(MergeError, match="only in the anchor"):
        iter_merged(anchor, {"w": current["w"]}, 0.5)  # raised at call time, not at next()


def test_lambda_tag() -> None:
    assert [lambda_tag(x) for x in (0.0, 0.5, 1.0, 0.125, -0.25, -0.0)] == [
        "0.00",
        "0.50",
        "1.00",
        "0.125",
        "-0.25",
        "0.00",
    ]


# ------------------------------------------------------------------------------------------- files


def test_write_merged_files_and_atomic_failure(tmp_path: Path, monkeypatch) -> None:
    anchor, current = _states()
    files = write_merged(
        lambda: anchor, lambda: current, 0.5, MergeOutput(tmp_path, sidecar={"sources": {"x": 1}})
    )
    assert files.checkpoint is None and files.safetensors.name == "merged_lambda=0.50.safetensors"
    tensors = load_file(files.safetensors)
    expected = merge_state_dicts(anchor, current, 0.5)
    assert set(tensors) == set(expected) and all(torch.equal(tensors[k], expected[k]) for k in expected)
    info = json.loads(files.sidecar.read_text())
    assert info["lambda"] == 0.5 and info["method"] == "lerp" and info["num_keys"] == 3
    assert info["num_interpolated"] == 2 and info["sources"] == {"x": 1}
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    calls = {"n": 0}
    real = merging.merge_tensor

    def failing_merge_tensor(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom mid-merge")
        return real(*args, **kwargs)

    monkeypatch.setattr(merging, "merge_tensor", failing_merge_tensor)
    other = {k: v + 1 if v.is_floating_point() else v for k, v in current.items()}
    for lam in (0.5, 0.25):  # overwrite an existing output, and write a new one
        calls["n"] = 0
        with pytest.raises(RuntimeError, match="boom mid-merge"):
            write_merged(lambda: anchor, lambda: other, lam, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # nothing partial, nothing changed


# -------------------------------------------------------------------------------- Lightning fixtures


class StepCounter(nn.Module):
    """An integer buffer in the generator: counts training forwards, must never be interpolated."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
        return x


class TinyModule(pl.LightningModule):
    """Stand-in for CFGRLModule: the token model lives at ``self.generator``."""

    def __init__(self, hidden: int = 4) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.generator = nn.Sequential(nn.Linear(4, hidden), nn.Tanh(), nn.Linear(hidden, 4), StepCounter())

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        return (self.generator(batch[0]) - 1.0).pow(2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(_randn(16, 4, seed=11)), batch_size=4)


def _trainer(root: Path, max_steps: int = 2, callbacks: list | None = None, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=callbacks or [],
        **kwargs,
    )


def _generator_of(ckpt: dict) -> dict[str, torch.Tensor]:
    return {k[len("generator.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("generator.")}


def _lightning_ckpt(module: TinyModule, **extra) -> dict:
    return {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": pl.__version__,
        **extra,
    }


def _assert_merge_of(merged: dict, anchor: dict, current: dict, lam: float) -> None:
    assert set(merged) == set(anchor)
    for key in anchor:
        if lam == 0.0:
            assert torch.equal(merged[key], anchor[key]), key
        elif lam == 1.0 or not anchor[key].is_floating_point():
            assert torch.equal(merged[key], current[key]), key
        else:
            expected = ((1 - lam) * anchor[key].double() + lam * current[key].double()).to(anchor[key].dtype)
            torch.testing.assert_close(merged[key], expected, rtol=0, atol=1e-6)
            assert not torch.equal(merged[key], anchor[key]) and not torch.equal(merged[key], current[key])


# ---------------------------------------------------------------------------------------- callback


def test_callback_validates_its_arguments() -> None:
    with pytest.raises(MergeError, match="method must be one of"):
        ModelMergeCallback("a.ckpt", method="ties")
    with pytest.raises(MergeError, match=r"lambda must be in \[0, 1\].*got 1.5"):
        ModelMergeCallback("a.ckpt", lambdas=(0.5, 1.5))
    with pytest.raises(ValueError, match="empty"):
        ModelMergeCallback("a.ckpt", lambdas=())
    with pytest.raises(ValueError, match="distinct"):
        ModelMergeCallback("a.ckpt", lambdas=(0.5, 0.5))
    assert ModelMergeCallback("a.ckpt", lambdas=(2.0,), allow_extrapolation=True).lambdas == (2.0,)


@pytest.mark.slow  # trains a model
def test_callback_writes_loadable_merged_models(tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = TinyModule()
    anchor = {k: v.clone() for k, v in module.generator.state_dict().items()}
    save_file(anchor, tmp_path / "anchor.safetensors")
    callback = ModelMergeCallback(str(tmp_path / "anchor.safetensors"))
    _trainer(tmp_path, callbacks=[callback], enable_checkpointing=False).fit(module)
    trained = module.generator.state_dict()
    assert trained["3.calls"].item() == 2 and anchor["3.calls"].item() == 0

    out = tmp_path / "merged"  # default: <log_dir or default_root_dir>/merged
    for lam in (0.0, 0.25, 0.5, 0.75, 1.0):
        tag = f"{lam:.2f}"
        ckpt = torch.load(out / f"merged_lambda={tag}.ckpt", weights_only=True)
        assert not {"optimizer_states", "lr_schedulers", "callbacks"} & set(ckpt)
        loaded = TinyModule.load_from_checkpoint(out / f"merged_lambda={tag}.ckpt")
        _assert_merge_of(loaded.generator.state_dict(), anchor, trained, lam)
        tensors = load_file(out / f"merged_lambda={tag}.safetensors")
        assert all(torch.equal(tensors[k], v) for k, v in loaded.generator.state_dict().items())
        info = json.loads((out / f"merged_lambda={tag}.json").read_text())
        assert info["lambda"] == lam and info["method"] == "lerp" and info["num_keys"] == len(anchor)
        anchor_sha = hashlib.sha256((tmp_path / "anchor.safetensors").read_bytes()).hexdigest()
        assert info["sources"]["anchor"]["sha256"] == anchor_sha
        assert info["sources"]["current"]["global_step"] == 2
        assert callback.written[tag] == str(out / f"merged_lambda={tag}.ckpt")
    assert sorted(p.suffix for p in out.iterdir()) == [".ckpt"] * 5 + [".json"] * 5 + [".safetensors"] * 5


def test_callback_rejects_an_incompatible_anchor_before_training(tmp_path: Path) -> None:
    torch.save(_lightning_ckpt(TinyModule(hidden=5)), tmp_path / "other.ckpt")
    trainer = _trainer(tmp_path, callbacks=[ModelMergeCallback(str(tmp_path / "other.ckpt"))])
    with pytest.raises(MergeError, match=r"does not fit the module.*0.weight: \(5, 4\) vs \(4, 4\)"):
        trainer.fit(TinyModule())
    assert trainer.global_step == 0 and not (tmp_path / "merged").exists()


@pytest.mark.slow  # trains a model
@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
def test_callback_state_survives_resume(tmp_path: Path) -> None:
    torch.manual_seed(1)
    module = TinyModule()
    anchor_path = tmp_path / "anchor.ckpt"
    torch.save(_lightning_ckpt(module), anchor_path)
    first_sha = hashlib.sha256(anchor_path.read_bytes()).hexdigest()
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpts", save_last=True, every_n_train_steps=1)
    first = ModelMergeCallback(str(anchor_path), lambdas=(0.0, 0.5), dirpath=str(tmp_path / "m1"))
    _trainer(tmp_path, callbacks=[saver, first]).fit(module)
    saved = torch.load(tmp_path / "ckpts" / "last.ckpt", weights_only=True)
    assert saved["callbacks"][first.state_key]["anchor_sha256"] == first_sha

    # The anchor file is replaced between the runs: the restored hash must notice.
    torch.manual_seed(2)
    new_anchor = TinyModule()
    torch.save(_lightning_ckpt(new_anchor), anchor_path)
    second = ModelMergeCallback(str(anchor_path), lambdas=(0.0, 0.5), dirpath=str(tmp_path / "m2"))
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpts2", save_last=True, every_n_train_steps=1)
    resumed = TinyModule()
    with pytest.warns(UserWarning, match="changed since this run started"):
        _trainer(tmp_path, max_steps=4, callbacks=[saver, second]).fit(
            resumed, ckpt_path=tmp_path / "ckpts" / "last.ckpt"
        )
    assert second.anchor_sha256 == first_sha  # restored from the checkpoint, not recomputed
    assert set(second.written) == {"0.00", "0.50"}
    merged = load_file(tmp_path / "m2" / "merged_lambda=0.50.safetensors")
    _assert_merge_of(merged, new_anchor.generator.state_dict(), resumed.generator.state_dict(), 0.5)
    assert (
        json.loads((tmp_path / "m2" / "merged_lambda=0.50.json").read_text())["sources"]["current"][
            "global_step"
        ]
        == 4
    )


# --------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def two_checkpoints(tmp_path: Path) -> tuple[Path, Path, TinyModule, TinyModule]:
    torch.manual_seed(3)
    quality, diversity = TinyModule(), TinyModule()
    quality.generator[3].calls.fill_(10)
    diversity.generator[3].calls.fill_(20)
    training_state = {
        "optimizer_states": [{"state": {0: {"momentum_buffer": torch.ones(4)}}, "param_groups": []}],
        "lr_schedulers": [],
        "callbacks": {"CFGDistillCallback": {"teacher": torch.ones(3)}},
    }
    torch.save(_lightning_ckpt(quality, **training_state), tmp_path / "quality.ckpt")
    torch.save(_lightning_ckpt(diversity, **training_state), tmp_path / "diversity.ckpt")
    return tmp_path / "quality.ckpt", tmp_path / "diversity.ckpt", quality, diversity


def test_cli_merges_checkpoints(two_checkpoints, tmp_path: Path) -> None:
    q_path, d_path, quality, diversity = two_checkpoints
    out = tmp_path / "out"
    assert (
        merge_main(
            ["--quality", str(q_path), "--diversity", str(d_path), "--lambdas", "0,0.5,1", "--out", str(out)]
        )
        == 0
    )
    for lam in (0.0, 0.5, 1.0):
        path = out / f"merged_lambda={lam:.2f}.ckpt"
        ckpt = torch.load(path, weights_only=True)
        assert not {"optimizer_states", "lr_schedulers", "callbacks"} & set(ckpt)
        loaded = TinyModule.load_from_checkpoint(path)
        _assert_merge_of(
            loaded.generator.state_dict(),
            quality.generator.state_dict(),
            diversity.generator.state_dict(),
            lam,
        )
        info = json.loads((out / f"merged_lambda={lam:.2f}.json").read_text())
        assert info["sources"]["quality"]["sha256"] == hashlib.sha256(q_path.read_bytes()).hexdigest()
        assert info["sources"]["diversity"]["sha256"] == hashlib.sha256(d_path.read_bytes()).hexdigest()
    assert loaded.generator[3].calls.item() == 20


def test_cli_from_yaml_config_with_slerp(two_checkpoints, tmp_path: Path) -> None:
    q_path, d_path, quality, diversity = two_checkpoints
    config = tmp_path / "merge.yaml"
    config.write_text(
        f"quality: {q_path}\ndiversity: {d_path}\nlambdas: [0.25]\nout: {tmp_path / 'y'}\nmethod: slerp\n"
    )
    assert merge_main(["--config", str(config)]) == 0
    merged = load_file(tmp_path / "y" / "merged_lambda=0.25.safetensors")
    a, b = quality.generator.state_dict(), diversity.generator.state_dict()
    for key in ("0.weight", "2.bias"):
        expected = _slerp_reference(a[key].double().numpy(), b[key].double().numpy(), 0.25)
        np.testing.assert_allclose(merged[key].numpy(), expected, rtol=1e-6, atol=1e-6)


def test_cli_errors_write_nothing(two_checkpoints, tmp_path: Path, capsys) -> None:
    q_path, d_path, _, _ = two_checkpoints
    out = tmp_path / "bad"
    torch.save(_lightning_ckpt(TinyModule(hidden=6)), tmp_path / "wide.ckpt")
    assert (
        merge_main(["--quality", str(q_path), "--diversity", str(tmp_path / "wide.ckpt"), "--out", str(out)])
        == 1
    )
    assert "shape mismatch" in capsys.readouterr().err
    assert (
        merge_main(
            ["--quality", str(q_path), "--diversity", str(d_path), "--lambdas", "0.5,1.5", "--out", str(out)]
        )
        == 1
    )
    assert "allow_extrapolation" in capsys.readouterr().err
    assert (
        merge_main(
            ["--quality", str(q_path), "--diversity", str(tmp_path / "missing.ckpt"), "--out", str(out)]
        )
        == 1
    )
    assert "missing.ckpt does not exist" in capsys.readouterr().err
    assert not out.exists()
    assert (
        merge_main(
            [
                "--quality",
                str(q_path),
                "--diversity",
                str(d_path),
                "--lambdas",
                "1.5",
                "--allow_extrapolation",
                "true",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert (out / "merged_lambda=1.50.ckpt").exists()


def test_cli_with_safetensors_sources_writes_no_ckpt(two_checkpoints, tmp_path: Path) -> None:
    _, _, quality, diversity = two_checkpoints
    save_file(quality.generator.state_dict(), tmp_path / "q.safetensors")
    save_file(diversity.generator.state_dict(), tmp_path / "d.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code = merge_main(
            [
                "--quality",
                str(tmp_path / "q.safetensors"),
                "--diversity",
                str(tmp_path / "d.safetensors"),
                "--lambdas",
                "0.5",
                "--out",
                str(tmp_path / "st"),
            ]
        )
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "st").iterdir()) == [
        "merged_lambda=0.50.json",
        "merged_lambda=0.50.safetensors",
    ]


# ------------------------------------------------------------------------------ with CFGRLModule


@pytest.mark.slow  # trains a model
def test_callback_with_cfgrl_module(tmp_path: Path) -> None:
    from lightning_cfgrl import CFGDistillCallback, CFGRLModule
    from lightning_cfgrl.experiments import SyntheticPromptDataModule
    from lightning_cfgrl.models import AudioTokenTransformer

    torch.manual_seed(4)
    generator = AudioTokenTransformer(
        num_codebooks=2,
        vocab_size=16,
        condition_sizes=(4, 4, 3),
        dim=32,
        num_layers=1,
        num_heads=2,
        max_frames=8,
    )
    anchor = {k: v.detach().clone() for k, v in generator.state_dict().items()}
    save_file(anchor, tmp_path / "anchor.safetensors")
    module = CFGRLModule(generator, rollout={"num_frames": 8}, optimization={"learning_rate": 1e-2})
    merge = ModelMergeCallback(str(tmp_path / "anchor.safetensors"), lambdas=(0.0, 0.5, 1.0))
    _trainer(
        tmp_path, callbacks=[CFGDistillCallback(), merge], enable_checkpointing=False, limit_val_batches=0
    ).fit(module, SyntheticPromptDataModule(batch_size=4))
    trained = {k: v.detach().clone() for k, v in module.generator.state_dict().items()}
    for lam in (0.0, 0.5, 1.0):
        path = tmp_path / "merged" / f"merged_lambda={lam:.2f}.ckpt"
        assert "callbacks" not in torch.load(path, weights_only=True)  # the teacher is not carried over
        loaded = CFGRLModule.load_from_checkpoint(path, weights_only=True)
        _assert_merge_of(loaded.generator.state_dict(), anchor, trained, lam)
