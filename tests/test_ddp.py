"""DDP on 2 CPU processes (gloo) with both objective callbacks matches a 1-process run with the same global
batch.

What "the same" can mean: ``CFGRLModule`` seeds its rollout per (step, rank), so a 2-process run
would sample other sequences than a 1-process run and no two such runs could be compared number for
number. The runs here use ``tests.helpers.tiny_fit.PerPromptSeedModule``, which seeds each prompt's samples
from the prompt itself, and ``SyntheticPromptDataModule``'s ``DistributedSampler``-based order, under
which rank r's step-t batch is every other prompt of the 1-process step-t batch. Then both runs
differentiate the same per-sample losses: the distillation term and the REINFORCE surrogate are means
over samples, DDP averages the two ranks' gradients of their half-batch means (equal halves: the
full-batch mean), and the running-mean reward baseline is averaged over ranks. With SGD the weights
after 3 steps must agree up to float rounding (gradient all-reduce sums in another order); the frozen
teacher and embedder must be bit-identical. Validation logs use ``sync_dist=True``: each rank validates
half of the 8 held-out prompts, and the synced value must equal the 1-process value over all 8 (an
unsynced rank 0 would log its own half). Training logs are per rank (not synced) except the gradient
norms of ``gradient.log_norm``, which are of the averaged gradient.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_cfgrl.io.checkpoints import load_checkpoint
from tests.helpers.tiny_fit import (
    GRAD_METRICS,
    VAL_METRICS,
    launch,
    single_process_reference,
    tiny_embedder,
    tiny_generator,
)

pytestmark = pytest.mark.slow


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("ddp")
    done = launch("tests.helpers.tiny_fit", "--strategy", "ddp", "--out", str(out))
    assert done.returncode == 0, done.stderr[-4000:]
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_ddp_splits_the_global_batch_and_matches_one_process(ddp_run: tuple[Path, list[dict]]) -> None:
    _, ranks = ddp_run
    single, _ = single_process_reference()
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["global_step"] for r in ranks] == [3, 3]
    # each step, the ranks' 4-prompt batches are disjoint halves of the 1-process 8-prompt batch
    for step in range(3):
        halves = torch.cat([ranks[0]["prompts"][step], ranks[1]["prompts"][step]])
        assert sorted(map(tuple, halves.tolist())) == sorted(map(tuple, single["prompts"][step].tolist()))
        assert not torch.equal(ranks[0]["prompts"][step], ranks[1]["prompts"][step])

    assert _max_diff(ranks[0]["generator"], ranks[1]["generator"]) == 0.0  # replicas stay identical
    moved = _max_diff(single["generator"], tiny_generator().state_dict())
    assert moved > 1e-3  # 3 steps changed the weights: the comparison below is not vacuous
    assert _max_diff(ranks[0]["generator"], single["generator"]) < 1e-6  # float rounding (seen: ~1e-8)

    for rank in ranks:  # frozen helpers: exactly the base model and the given embedder, on every rank
        assert _max_diff(rank["teacher"], tiny_generator().state_dict()) == 0.0
        assert _max_diff(rank["embedder"], tiny_embedder().state_dict()) == 0.0
        ema, count = rank["running"]
        assert count == 3 and ema == pytest.approx(single["running"][0], rel=1e-6)


def test_ddp_validation_metrics_are_synced(ddp_run: tuple[Path, list[dict]]) -> None:
    _, ranks = ddp_run
    single, _ = single_process_reference()
    for name in VAL_METRICS:
        assert ranks[0]["val"][name] == ranks[1]["val"][name], name
        assert ranks[0]["val"][name] == pytest.approx(single["val"][name], rel=1e-5), name


def test_ddp_gradient_norm_logs_describe_the_averaged_gradient(ddp_run: tuple[Path, list[dict]]) -> None:
    # DiversityRewardCallback(gradient={log_norm: true}) averages its term's gradient over ranks as DDP does
    # p.grad, so every rank logs the 1-process numbers (not its half-batch's)
    _, ranks = ddp_run
    single, _ = single_process_reference()
    assert set(single["grad_norms"]) == set(GRAD_METRICS)
    for name in GRAD_METRICS:
        assert ranks[0]["grad_norms"][name] == ranks[1]["grad_norms"][name], name
        assert ranks[0]["grad_norms"][name] == pytest.approx(single["grad_norms"][name], rel=1e-5), name


def test_ddp_writes_one_checkpoint_holding_the_final_state(ddp_run: tuple[Path, list[dict]]) -> None:
    out, ranks = ddp_run
    assert ranks[0]["checkpoints"] == ranks[1]["checkpoints"] == ["last.ckpt"]
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")
    assert ckpt["global_step"] == 3
    weights = {k.removeprefix("generator."): v for k, v in ckpt["state_dict"].items()}
    assert _max_diff(weights, ranks[0]["generator"]) == 0.0
    callbacks = ckpt["callbacks"]
    assert _max_diff(callbacks["CFGDistillCallback"]["teacher"], ranks[0]["teacher"]) == 0.0
    diversity = next(v for k, v in callbacks.items() if k.startswith("DiversityRewardCallback"))
    assert diversity["running_baseline"]["count"] == 3
    assert ckpt["SyntheticPromptDataModule"] == {"shuffle_seed": 0}


def test_ddp_example_config_resolves(tmp_path: Path) -> None:
    from lightning.pytorch.strategies import DDPStrategy

    from lightning_cfgrl.cli.main import run_cli
    from lightning_cfgrl.embedders import ContrastiveTokenEmbedder
    from lightning_cfgrl.io.checkpoint_io import AtomicCheckpointIO

    embedder = ContrastiveTokenEmbedder()
    torch.save(
        {
            "state_dict": {f"embedder.{k}": v for k, v in embedder.state_dict().items()},
            "hyper_parameters": {"embedder": embedder.spec()},
        },
        tmp_path / "embedder.ckpt",
    )
    config = Path(__file__).resolve().parents[1] / "examples" / "configs" / "distill_ddp.yaml"
    text = config.read_text().replace("runs/embedder/checkpoints/last.ckpt", str(tmp_path / "embedder.ckpt"))
    (tmp_path / "distill_ddp.yaml").write_text(text.replace("save_dir: runs", f"save_dir: {tmp_path}"))
    cli = run_cli(
        ["--config", str(tmp_path / "distill_ddp.yaml"), "--model.init_args.init_checkpoint=null"], run=False
    )
    assert isinstance(cli.trainer.strategy, DDPStrategy) and cli.trainer.num_devices == 2
    assert isinstance(cli.trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert cli.datamodule.batch_size * cli.trainer.num_devices == 4  # the global batch of distill_beta15.yaml
