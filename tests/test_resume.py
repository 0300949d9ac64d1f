"""Kill -9 at step k, resume from ``last.ckpt``: the same weights, bit for bit, as an uninterrupted run.

``tests/helpers/resume_fit.py`` runs in subprocesses with one thread and ``torch.use_deterministic_algorithms``.
What has to come back for the runs to agree, and where it comes from:

* student weights and AdamW state: Lightning's checkpoint;
* teacher and embedder: ``CFGDistillCallback`` / ``DiversityRewardCallback`` state (the resumed
  process builds both from other random weights, so nothing else could supply them);
* running-mean reward baseline: ``DiversityRewardCallback`` state;
* rollout samples: seeded from (seed, global step, rank), nothing to restore;
* dropout masks (global torch RNG): ``CFGRLModule`` seeds the global RNG per training step from (seed,
  step, rank) inside a fork, so nothing needs restoring, and the validation run right after the
  checkpoint (which draws from the global RNG) cannot shift them;
* prompt order: ``SyntheticPromptDataModule`` saves its shuffle seed and, resumed mid-epoch, skips the
  batches already trained on (Lightning 2.6 restarts a plain ``DataLoader`` at the epoch's start).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from lightning_cfgrl.experiments import SyntheticPromptDataModule
from lightning_cfgrl.io.checkpoints import load_checkpoint
from lightning_cfgrl.training.prompts import PromptSplit, ResumableShuffle, TensorDictDataset
from tests.helpers.resume_fit import VAL_EVERY
from tests.helpers.tiny_fit import launch

KILL_AT, STEPS = 5, 10  # 4 batches per epoch: killed in epoch 1, resumed through epoch 2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, dict]:
    out = tmp_path_factory.mktemp("resume")
    killed = launch(
        "tests.helpers.resume_fit", "--out", str(out), "--steps", str(STEPS), "--kill-at", str(KILL_AT)
    )
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-3000:])  # died by SIGKILL
    assert not (out / "killed.pt").exists()
    done = launch(
        "tests.helpers.resume_fit", "--out", str(out), "--steps", str(STEPS), "--resume", "--uninterrupted"
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return (
        out,
        torch.load(out / "resumed.pt", weights_only=True),
        torch.load(out / "uninterrupted.pt", weights_only=True),
    )


def test_killed_run_left_a_complete_last_checkpoint_of_step_k(runs: tuple[Path, dict, dict]) -> None:
    out, _, _ = runs
    last = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert last["global_step"] == KILL_AT
    assert isinstance(last["SyntheticPromptDataModule"]["shuffle_seed"], int)
    assert last["cfgrl_module_class"] == "lightning_cfgrl.training.module.CFGRLModule"
    # the checkpoint of step k was followed by a validation, then the kill
    assert KILL_AT % VAL_EVERY == 0
    assert (out / "validations_killed.txt").read_text().split() == [str(KILL_AT)]
    validated = (out / "validations_uninterrupted.txt").read_text().split()
    assert validated == [str(s) for s in range(VAL_EVERY, STEPS + 1, VAL_EVERY)]


def test_resumed_run_reaches_the_uninterrupted_weights_bit_for_bit(runs: tuple[Path, dict, dict]) -> None:
    _, resumed, uninterrupted = runs
    assert resumed["global_step"] == uninterrupted["global_step"] == STEPS
    assert resumed["epoch"] == uninterrupted["epoch"]
    # the resumed process trained on exactly the batches the uninterrupted one trained on after step k
    assert torch.equal(resumed["prompts"], uninterrupted["prompts"][KILL_AT:])
    for part in ("generator", "teacher", "embedder"):
        for name, value in uninterrupted[part].items():
            assert torch.equal(resumed[part][name], value), (part, name)
    assert resumed["running"] == uninterrupted["running"]  # (ema, count), exact
    assert all(
        torch.equal(a, b) for a, b in zip(resumed["adam_exp_avg"], uninterrupted["adam_exp_avg"], strict=True)
    )


def test_resumable_shuffle_skips_into_the_epoch_and_reshuffles_per_epoch() -> None:
    data = TensorDictDataset(condition=torch.arange(40)[:, None])
    whole = list(ResumableShuffle(data, num_replicas=1, rank=0, seed=7, epoch=3))
    resumed = ResumableShuffle(data, num_replicas=1, rank=0, seed=7, epoch=3, skip=16)
    assert list(resumed) == whole[16:]
    assert list(resumed) == whole  # only the first pass skips
    resumed.set_epoch(4)
    assert sorted(resumed) == list(range(40)) and list(resumed) != whole
    halves = [list(ResumableShuffle(data, num_replicas=2, rank=r, seed=7, epoch=3)) for r in (0, 1)]
    assert halves[0] == whole[0::2] and halves[1] == whole[1::2]  # ranks take every other sample


def test_fresh_prompt_order_is_unchanged_from_shuffle_true() -> None:
    # without a checkpoint the seed is drawn where RandomSampler drew it: seeded runs keep their order
    prompts = SyntheticPromptDataModule(batch_size=8, split=PromptSplit(repeats=2))
    torch.manual_seed(3)
    old = DataLoader(
        TensorDictDataset(condition=prompts.train_prompts.repeat(2, 1)),
        batch_size=8,
        shuffle=True,
        drop_last=True,
    )
    expected, after_old = [b["condition"] for b in old], torch.rand(3)
    torch.manual_seed(3)
    got, after_new = [b["condition"] for b in prompts.train_dataloader()], torch.rand(3)
    assert len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    assert torch.equal(after_old, after_new)  # the global RNG advanced the same way
    assert prompts.state_dict() == {"shuffle_seed": prompts._seed_in_use}
