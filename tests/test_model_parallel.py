"""Sharded training: Lightning's ``ModelParallelStrategy`` with FSDP2 (``fully_shard``) on 2 CPU
processes (gloo), both objective callbacks, the distillation teacher sharded like the student.

The run is ``tests.helpers.tiny_fit.ShardedModule`` (``fully_shard`` per transformer block, then the root, in
``configure_model``; the teacher that ``CFGDistillCallback.setup`` deep-copied beforehand is sharded the
same way). Each rank holds half of every parameter; FSDP all-gathers for each forward (rollout
decoding steps included) and reduce-scatters gradients, averaged over the 2 data-parallel ranks, so
with per-prompt rollout seeds (see ``tests/test_ddp.py``) the weights must match the 1-process run up
to rounding. The checkpoint is written consolidated (``save_distributed_checkpoint=False``, one file
that ``load_checkpoint`` and the merge tools read), and a second fit resumes from it into a module
built from other random weights, which must land where the 1-process run lands after the same resume.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_cfgrl.io.checkpoints import load_checkpoint
from tests.helpers.tiny_fit import (
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
def fsdp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], list[dict]]:
    out = tmp_path_factory.mktemp("fsdp")
    done = launch("tests.helpers.tiny_fit", "--strategy", "fsdp", "--out", str(out), "--resume-to", "4")
    assert done.returncode == 0, done.stderr[-4000:]
    load = [
        torch.load(out / f"rank{r}{suffix}.pt", weights_only=True)
        for suffix in ("", "_resumed")
        for r in (0, 1)
    ]
    return out, load[:2], load[2:]


def test_fsdp_matches_one_process_with_a_sharded_teacher(
    fsdp_run: tuple[Path, list[dict], list[dict]],
) -> None:
    _, ranks, _ = fsdp_run
    single, _ = single_process_reference()
    for rank in ranks:  # states gathered from the shards on each rank
        assert rank["world_size"] == 2 and rank["global_step"] == 3
        assert _max_diff(rank["generator"], single["generator"]) < 1e-6  # rounding (seen: ~1e-8)
        assert _max_diff(rank["teacher"], tiny_generator().state_dict()) == 0.0
        assert _max_diff(rank["embedder"], tiny_embedder().state_dict()) == 0.0
        assert rank["running"][1] == 3 and rank["running"][0] == pytest.approx(single["running"][0], rel=1e-6)
        for name in VAL_METRICS:
            assert rank["val"][name] == pytest.approx(single["val"][name], rel=1e-5), name


def test_fsdp_checkpoint_is_one_whole_file_and_resumes(fsdp_run: tuple[Path, list[dict], list[dict]]) -> None:
    out, ranks, resumed = fsdp_run
    _, single_resumed = single_process_reference()
    assert ranks[0]["checkpoints"] == ["last.ckpt"]
    ckpt = load_checkpoint(out / "checkpoints" / "last.ckpt")  # weights_only: no DTensor, no pickled code
    weights = {k.removeprefix("generator."): v for k, v in ckpt["state_dict"].items()}
    assert _max_diff(weights, ranks[0]["generator"]) == 0.0
    # the callback gathered the sharded teacher: whole tensors, not rank 0's halves
    assert _max_diff(ckpt["callbacks"]["CFGDistillCallback"]["teacher"], tiny_generator().state_dict()) == 0.0

    for rank in resumed:  # resumed into other random weights: the checkpoint brought everything back
        assert rank["global_step"] == 4
        assert _max_diff(rank["generator"], single_resumed["generator"]) < 1e-6
        assert _max_diff(rank["teacher"], tiny_generator().state_dict()) == 0.0
        assert _max_diff(rank["embedder"], tiny_embedder().state_dict()) == 0.0
        assert rank["running"][1] == 4
