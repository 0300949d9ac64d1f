"""``GradNormMonitor`` logs one term's gradient norm, the total, the rest and their ratio, exactly."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_cfgrl.training.grad_norm import GradNormMonitor

X = torch.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=torch.float64)


class TwoTerms(pl.LightningModule):
    """loss = a + b with a = sum(w . x) and b = 0.5 * |w|^2: grad a = sum of x, grad b = w."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([0.5, -2.0], dtype=torch.float64))
        self.monitor = GradNormMonitor("a")
        self.logged: dict[str, float] = {}

    def log(self, name, value, **kwargs) -> None:  # noqa: ANN001
        self.logged[name] = float(value)

    def training_step(self, batch, batch_idx):  # noqa: ANN001
        a = (batch[0] @ self.w).sum()
        b = 0.5 * self.w.pow(2).sum()
        self.monitor.add_term(self, a)
        return a + b

    def on_before_optimizer_step(self, optimizer) -> None:  # noqa: ANN001
        self.monitor.log_at_optimizer_step(self)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


@pytest.mark.slow  # trains a model
def test_the_monitor_logs_the_term_the_total_the_rest_and_the_ratio():
    module = TwoTerms()
    data = DataLoader(TensorDataset(X), batch_size=2)
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(module, data)
    grad_a = X.sum(0)  # [4, 1]
    grad_b = torch.tensor([0.5, -2.0], dtype=torch.float64)
    expected = {
        "train/grad_norm/a": grad_a.norm(),
        "train/grad_norm/total": (grad_a + grad_b).norm(),
        "train/grad_norm/other_terms": grad_b.norm(),
        "train/grad_norm/a_ratio": grad_a.norm() / grad_b.norm(),
    }
    assert set(module.logged) == set(expected)
    for key, value in expected.items():  # float32 norms of float64 gradients: relative 1e-6
        assert abs(module.logged[key] - float(value)) <= 1e-6 * float(value), (key, module.logged[key], value)
