"""MusicGen at scale, on a tiny random model saved like a local ``facebook/musicgen-small`` (nothing
downloads): a LoRA student whose adapter-disabled self is the teacher, gradient checkpointing, the
text-prompt YAML, and ``cfgrl export`` round trips for distilled, LoRA and merged checkpoints."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from lightning_cfgrl import CFGDistillCallback, CFGRLModule, sample
from lightning_cfgrl.training.prompts import PromptSplit

pytest.importorskip("transformers")

from lightning_cfgrl.adapters import MusicgenGenerator  # noqa: E402
from lightning_cfgrl.adapters.musicgen import import_musicgen  # noqa: E402
from lightning_cfgrl.adapters.peft import AdapterDisabledTeacher, import_peft, wrap_peft  # noqa: E402
from lightning_cfgrl.audio import TextPromptDataModule  # noqa: E402
from lightning_cfgrl.io.generators import load_generator  # noqa: E402
from tests.helpers.models import quiet_trainer  # noqa: E402
from tests.helpers.musicgen import save_tiny_musicgen  # noqa: E402

try:
    import_peft()
except ImportError:
    pytest.skip("peft is not installed (pip install lightning-cfgrl[lora])", allow_module_level=True)

REPO = Path(__file__).resolve().parent.parent
PROMPTS = REPO / "examples" / "prompts" / "musicgen_prompts.csv"
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "fc1"], "init_lora_weights": False}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny models: a second intra-op thread only adds waiting on a busy 2-core machine."""


@pytest.fixture(scope="module")
def hf():
    transformers = import_musicgen()
    transformers.logging.set_verbosity_error()
    return transformers


@pytest.fixture(scope="module")
def folder(hf, tmp_path_factory) -> Path:
    """A tiny random MusicGen + text tokenizer, saved as a local model folder."""
    return save_tiny_musicgen(hf, tmp_path_factory.mktemp("musicgen") / "musicgen-tiny")


def _condition(folder: Path) -> dict[str, torch.Tensor]:
    data = TextPromptDataModule(
        ["calm piano", "loud rock guitar drums", ""],
        tokenizer=str(folder),
        split=PromptSplit(heldout_fraction=0),
    )
    return data.collate([{"condition": torch.tensor([i])} for i in range(3)])["condition"]


def test_adapter_disabled_teacher_is_the_musicgen_base_bit_for_bit(folder):
    base = MusicgenGenerator(str(folder)).eval()
    student = wrap_peft(MusicgenGenerator(str(folder)), LORA).eval()
    cond = _condition(folder)
    steps = sample(base, cond, 6, seed=0)
    with torch.no_grad():
        want = base(steps, cond)
        assert not torch.allclose(student(steps, cond), want, atol=1e-3)
        assert torch.equal(AdapterDisabledTeacher(student)(steps, cond), want)
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n and ".decoder." in n for n in trainable)


def test_musicgen_gradient_checkpointing_gives_the_same_gradients(hf, folder):
    grads = []
    for checkpointing in (False, True):
        gen = MusicgenGenerator(str(folder), gradient_checkpointing=checkpointing).train()
        cond = _condition(folder)
        steps = sample(MusicgenGenerator(str(folder)), cond, 6, seed=1)
        layer = next(m for m in gen.modules() if type(m).__name__ == "MusicgenDecoderLayer")
        calls = []
        layer.fc1.register_forward_hook(
            lambda *args, calls=calls: calls.append(1)
        )  # HF checkpoints forward, not hooks
        torch.manual_seed(3)  # decoder dropout 0.1: the same masks, replayed by the checkpoint
        gen(steps, cond).float().logsumexp(-1).mean().backward()
        assert len(calls) == (2 if checkpointing else 1)  # recomputed in backward: activations were not kept
        grads.append({n: p.grad.clone() for n, p in gen.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, grad in grads[0].items():
        scale = float(grad.abs().max()) + 1e-12
        torch.testing.assert_close(
            grads[1][name], grad, rtol=0, atol=64 * torch.finfo(torch.float32).eps * scale
        )
    spec = MusicgenGenerator(str(folder), gradient_checkpointing=True).spec()
    assert spec["init_args"]["gradient_checkpointing"] is True


def _run_yaml(
    name: str, folder: Path, workdir: Path, monkeypatch, steps: int = 2, val_batches: int = 1
) -> Path:
    """Run the shipped YAML with its model/tokenizer/prompt paths pointed at the test's files."""
    from lightning_cfgrl.cli.main import main

    config = (REPO / "examples" / "configs" / name).read_text()
    assert "models/musicgen-small" in config and "examples/prompts/musicgen_prompts.csv" in config
    config = config.replace("models/musicgen-small", str(folder)).replace(
        "examples/prompts/musicgen_prompts.csv", str(PROMPTS)
    )
    (workdir / name).write_text(config)
    monkeypatch.chdir(workdir)  # the YAML's runs/ folder lands here
    args = [
        "fit",
        "--config",
        str(workdir / name),
        "--model.init_args.rollout.num_frames=4",
        f"--trainer.max_steps={steps}",
        f"--trainer.val_check_interval={steps}",
        f"--trainer.limit_val_batches={val_batches}",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    assert main(args) == 0
    ckpt = workdir / "runs" / name.removesuffix(".yaml") / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()
    return ckpt


def _hf_logits(model, cond, steps) -> torch.Tensor:
    return MusicgenGenerator(model).eval()(steps, cond)


def _check_export(hf, folder: Path, checkpoint: Path, out: Path, want_generator, base: Path | None = None):
    """Export, reload with from_pretrained, compare logits with ``want_generator`` and run generate()."""
    from lightning_cfgrl.cli.main import main

    args = ["export", "--checkpoint", str(checkpoint), "--out", str(out)]
    assert main(args + (["--base", str(base)] if base else [])) == 0
    exported = hf.MusicgenForConditionalGeneration.from_pretrained(out, local_files_only=True).eval()
    cond = _condition(folder)
    steps = sample(MusicgenGenerator(str(folder)).eval(), cond, 5, seed=2)
    with torch.no_grad():
        want = want_generator.eval()(steps, cond)
        got = _hf_logits(exported, cond, steps)
    scale = float(want.abs().max())
    torch.testing.assert_close(got, want, rtol=0, atol=64 * torch.finfo(torch.float32).eps * scale)
    tokenizer = hf.AutoTokenizer.from_pretrained(out, local_files_only=True)  # the tokenizer came along
    inputs = tokenizer(["calm piano"], return_tensors="pt")
    audio = exported.generate(**inputs, do_sample=True, guidance_scale=3.0, max_new_tokens=6)
    assert audio.dim() == 3 and audio.shape[0] == 1 and bool(torch.isfinite(audio).all())
    return exported


@pytest.mark.slow
def test_text_prompt_yaml_trains_lora_and_exports(hf, folder, tmp_path, monkeypatch):
    """The shipped YAML (LoRA, gradient checkpointing, bf16 chunked teacher, text prompts) runs a few
    steps; its checkpoint holds adapters only and exports to a folder transformers loads."""
    ckpt = _run_yaml("musicgen_lora.yaml", folder, tmp_path, monkeypatch)
    state = torch.load(ckpt, weights_only=True)
    assert state["state_dict"] and all("lora_" in k for k in state["state_dict"])
    assert state["callbacks"]["CFGDistillCallback"] == {"teacher": {}}
    student = load_generator(ckpt)
    exported = _check_export(hf, folder, ckpt, tmp_path / "exported", student)
    base = hf.MusicgenForConditionalGeneration.from_pretrained(folder, local_files_only=True)
    changed = [k for k, v in exported.state_dict().items() if not torch.equal(v, base.state_dict()[k])]
    assert changed and all(".decoder." in k or k.startswith("decoder.") for k in changed)  # LoRA merged in


def _fit_python(folder: Path, path: Path, seed: int, peft_config: dict | None) -> Path:
    torch.manual_seed(seed)
    module = CFGRLModule(
        MusicgenGenerator(str(folder)),
        seed=seed,
        peft_config=peft_config,
        rollout={"num_frames": 4},
        optimization={"learning_rate": 1e-2},
    )
    data = TextPromptDataModule(str(PROMPTS), tokenizer=str(folder), batch_size=2)
    trainer = quiet_trainer(
        max_steps=1, limit_val_batches=0, callbacks=[CFGDistillCallback(guidance_scale=3.0)]
    )
    trainer.fit(module, data)
    trainer.save_checkpoint(path)
    return path


@pytest.mark.slow
def test_export_round_trips_distilled_and_merged_checkpoints(hf, folder, tmp_path):
    from lightning_cfgrl.cli.merge import merge_checkpoints

    distilled = _fit_python(folder, tmp_path / "distilled.ckpt", 0, None)
    _check_export(hf, folder, distilled, tmp_path / "out_distilled", load_generator(distilled))

    lora = [_fit_python(folder, tmp_path / f"lora{i}.ckpt", i, LORA) for i in (1, 2)]
    files = merge_checkpoints(str(lora[0]), str(lora[1]), [0.5], str(tmp_path / "merged"))[0]
    merged = load_generator(files.checkpoint)
    assert isinstance(merged, MusicgenGenerator)
    _check_export(hf, folder, files.checkpoint, tmp_path / "out_merged_ckpt", merged)
    # the merged safetensors file has the adapter's `model.` keys; --base gives the architecture
    _check_export(hf, folder, files.safetensors, tmp_path / "out_merged_st", merged, base=folder)


def test_export_errors(folder, tmp_path, capsys):
    from lightning_cfgrl.cli.main import main
    from lightning_cfgrl.io.checkpoints import atomic_save_safetensors

    weights = tmp_path / "w.safetensors"
    atomic_save_safetensors(copy.deepcopy(MusicgenGenerator(str(folder))).state_dict(), weights)
    assert main(["export", "--checkpoint", str(weights), "--out", str(tmp_path / "o")]) == 1
    assert "pass --base" in capsys.readouterr().err.strip().splitlines()[-1]
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    args = ["export", "--checkpoint", str(weights), "--base", str(folder), "--out", str(tmp_path / "full")]
    assert main(args) == 1
    assert "exists and is not empty" in capsys.readouterr().err
    assert (tmp_path / "full" / "x").read_text() == "keep"
    assert main(["export", "--checkpoint", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "o")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o.*"))  # nothing half-written


@pytest.mark.slow  # trains a model
def test_export_refuses_a_generator_without_a_transformers_model(tmp_path, capsys):
    from lightning_cfgrl.cli.main import main
    from tests.helpers.tiny_fit import tiny_generator

    module = CFGRLModule(tiny_generator(0), rollout={"num_frames": 4})
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0, callbacks=[CFGDistillCallback()])
    from lightning_cfgrl.experiments import SyntheticPromptDataModule

    trainer.fit(module, SyntheticPromptDataModule(batch_size=2))
    trainer.save_checkpoint(tmp_path / "ref.ckpt")
    assert main(["export", "--checkpoint", str(tmp_path / "ref.ckpt"), "--out", str(tmp_path / "o")]) == 1
    assert "AudioTokenTransformer, which has no transformers model" in capsys.readouterr().err


@pytest.mark.slow
def test_diversity_yaml_rewards_with_musicgens_own_codec(folder, tmp_path, monkeypatch):
    """The beta = 15 YAML: the reward decodes samples with MusicGen's EnCodec and embeds the audio."""
    ckpt = _run_yaml("musicgen_lora_diversity.yaml", folder, tmp_path, monkeypatch, steps=1, val_batches=0)
    state = torch.load(ckpt, weights_only=True)
    assert all("lora_" in k for k in state["state_dict"])
    assert any(k.startswith("DiversityRewardCallback") for k in state["callbacks"])
