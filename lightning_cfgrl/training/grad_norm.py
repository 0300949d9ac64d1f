"""``GradNormMonitor``: how large one loss term's gradient is beside the rest, for any objective.

On the steps it is given a term, it takes that term's gradient with respect to the trainable parameters
(one extra backward, the graph kept), averages it over processes as DDP averages ``p.grad``, logs its norm
as ``train/grad_norm/<name>`` and accumulates it; at the optimizer step it logs the total gradient's norm
(``train/grad_norm/total``), the norm of everything else (``train/grad_norm/other_terms``: total minus
this term) and this term's norm over the others' (``ratio_key``). Not for FSDP-sharded parameters: a
per-parameter gradient taken here would bypass FSDP's reduce-scatter.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import Tensor


def global_norm(tensors: list[Tensor]) -> Tensor:
    """The L2 norm of all ``tensors`` together (float32 per tensor)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t.float()) for t in tensors]))


class GradNormMonitor:
    """Gradient norm of one named loss term, and its ratio to the other terms at optimizer time.

    Args:
        name: the term's name in ``train/grad_norm/<name>``.
        ratio_key: the metric of this term's norm over the other terms'
            (default ``train/grad_norm/<name>_ratio``).
    """

    def __init__(self, name: str, ratio_key: str | None = None) -> None:
        self.name = name
        self.ratio_key = ratio_key or f"train/grad_norm/{name}_ratio"
        self._buffer: list[Tensor] | None = None

    @staticmethod
    def parameters(pl_module: pl.LightningModule) -> list[Tensor]:
        return [p for p in pl_module.parameters() if p.requires_grad]

    def add_term(
        self, pl_module: pl.LightningModule, term: Tensor, params: list[Tensor] | None = None
    ) -> None:
        """Log ``term``'s gradient norm and keep its gradient for :meth:`log_at_optimizer_step`."""
        params = self.parameters(pl_module) if params is None else params
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads, strict=True)]
        # under DDP each rank holds its half-batch's gradient; average it as DDP averages p.grad, so the
        # norms describe the update actually applied and "other_terms" subtracts like from like
        grads = [pl_module.trainer.strategy.reduce(g, reduce_op="mean") for g in grads]
        pl_module.log(f"train/grad_norm/{self.name}", global_norm(grads), batch_size=1)
        # Lightning divides the loss by accumulate_grad_batches before backward; mirror it so the
        # buffer matches this term's share of p.grad at optimizer time
        scale = 1.0 / pl_module.trainer.accumulate_grad_batches
        if self._buffer is None:
            self._buffer = [g * scale for g in grads]
        else:
            for buf, g in zip(self._buffer, grads, strict=True):
                buf.add_(g, alpha=scale)

    def log_at_optimizer_step(
        self, pl_module: pl.LightningModule, params: list[Tensor] | None = None
    ) -> None:
        """Log the total, the other terms' and the ratio, if a term was added since the last step."""
        if self._buffer is None:
            return
        params = self.parameters(pl_module) if params is None else params
        total = [torch.zeros_like(p) if p.grad is None else p.grad.detach() for p in params]
        pl_module.log("train/grad_norm/total", global_norm(total), batch_size=1)
        own = global_norm(self._buffer)
        others = global_norm([t - b for t, b in zip(total, self._buffer, strict=True)])
        pl_module.log("train/grad_norm/other_terms", others, batch_size=1)
        pl_module.log(self.ratio_key, own / others.clamp(min=1e-12), batch_size=1)
        self._buffer = None


__all__ = ["GradNormMonitor", "global_norm"]
