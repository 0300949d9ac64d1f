"""Rule-based judges that no model wrote: metrical alignment of onsets with the prompt's meter, and a
Krumhansl-Kessler key-profile estimate of major vs minor. Both read frames ``[B, 2, T]`` (frame 0 is a
downbeat: the tokenizer drops pickups)."""

from __future__ import annotations

import torch
from torch import Tensor

from lightning_cfgrl.eval.scorers import Scorer
from lightning_cfgrl.experiments.folk.tokens import FolkTokenizer

# Krumhansl & Kessler (1982) probe-tone profiles, tonic first
KK_MAJOR = (6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88)
KK_MINOR = (6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17)


def meter_grid(meter: str) -> tuple[int, int]:
    """``"6/8"`` -> ``(bar, beat)`` in sixteenths: (12, 6). Compound meters (6/8, 9/8, 12/8) beat in dotted
    quarters; 3/8 in eighths; the rest in the denominator's unit."""
    try:
        num, den = (int(x) for x in meter.split("/"))
    except ValueError as error:
        raise ValueError(f"meter must look like '3/4', got {meter!r}") from error
    if num < 1 or den not in (1, 2, 4, 8, 16):
        raise ValueError(f"meter must be n/d with n >= 1 and d in 1, 2, 4, 8, 16; got {meter!r}")
    unit = 16 // den
    beat = 3 * unit if den == 8 and num % 3 == 0 and num > 3 else unit
    return num * unit, beat


def metrical_weights(meter: str, num_frames: int) -> Tensor:
    """``[T]`` float64: 3 on downbeats, 2 on the other beats, 1 on eighth-note positions, 0 elsewhere."""
    bar, beat = meter_grid(meter)
    t = torch.arange(num_frames)
    w = (t % 2 == 0).double()
    w = torch.where(t % beat == 0, torch.full_like(w, 2.0), w)
    return torch.where(t % bar == 0, torch.full_like(w, 3.0), w)


def meter_alignment(onsets: Tensor, live: Tensor, meter: str) -> Tensor:
    """Pearson correlation over the live frames between onsets ``[B, T]`` (bool) and the meter's metrical
    weights: +1 when notes start exactly on the strong positions, about 0 when onsets ignore the bar.
    A sample with no live frames, no onsets or onsets everywhere scores 0. Returns ``[B]`` float64."""
    w = metrical_weights(meter, onsets.shape[1]).expand_as(onsets)
    m = live.double()
    n = m.sum(1).clamp_min(1.0)
    x = onsets.double()
    mx, mw = (x * m).sum(1) / n, (w * m).sum(1) / n
    cov = ((x - mx[:, None]) * (w - mw[:, None]) * m).sum(1)
    var = ((x - mx[:, None]) ** 2 * m).sum(1) * ((w - mw[:, None]) ** 2 * m).sum(1)
    return torch.where(var > 1e-12, cov / var.clamp_min(1e-12).sqrt(), torch.zeros_like(cov))


def key_correlations(sounding: Tensor) -> tuple[Tensor, Tensor]:
    """Duration-weighted pitch-class histograms of ``sounding [B, T]`` MIDI (-1 silent) correlated with the
    24 rotated profiles: ``(best major r [B], best minor r [B])`` float64 (0 for a silent sample)."""
    pc = torch.zeros(sounding.shape[0], 12, dtype=torch.float64)
    live = sounding >= 0
    pc.scatter_add_(1, (sounding.clamp_min(0) % 12), live.double())
    out = []
    for profile in (KK_MAJOR, KK_MINOR):
        p = torch.tensor(profile, dtype=torch.float64)
        rotations = torch.stack([p.roll(k) for k in range(12)])  # [12 tonics, 12 pcs]
        x = pc - pc.mean(1, keepdim=True)
        r = rotations - rotations.mean(1, keepdim=True)
        denom = x.norm(dim=1, keepdim=True) * r.norm(dim=1)[None]
        corr = torch.where(denom > 1e-12, (x @ r.T) / denom.clamp_min(1e-12), torch.zeros_like(denom))
        out.append(corr.max(1).values)
    return out[0], out[1]


class MeterAlignment(Scorer):
    """``meter``: :func:`meter_alignment` of each sample with its prompt's meter (higher is better)."""

    name = "meter"

    def __init__(self, corpus) -> None:
        self.corpus = corpus

    def __call__(self, frames: Tensor, condition: Tensor) -> Tensor:
        tok: FolkTokenizer = self.corpus.tokenizer
        onsets, live = tok.onsets(frames.cpu()), tok.live(frames.cpu())
        meters = self.corpus.prompt_table.meter_of(condition.cpu())
        out = torch.empty(frames.shape[0], dtype=torch.float64)
        for meter in set(meters):
            rows = torch.tensor([m == meter for m in meters])
            out[rows] = meter_alignment(onsets[rows], live[rows], meter)
        return out


class KeyProfileMode(Scorer):
    """``mode_key``: best-major minus best-minor key-profile correlation, signed by the prompt's mode
    (+ for "major", - for "minor"); prompts in other modes score 0 (neither profile is their target)."""

    name = "mode_key"

    def __init__(self, corpus) -> None:
        self.corpus = corpus

    def __call__(self, frames: Tensor, condition: Tensor) -> Tensor:
        major, minor = key_correlations(self.corpus.tokenizer.sounding(frames.cpu()))
        sign = torch.tensor(
            [
                {"major": 1.0, "minor": -1.0}.get(m, 0.0)
                for m in self.corpus.prompt_table.mode_of(condition.cpu())
            ],
            dtype=torch.float64,
        )
        return sign * (major - minor)


__all__ = [
    "KK_MAJOR",
    "KK_MINOR",
    "KeyProfileMode",
    "MeterAlignment",
    "key_correlations",
    "meter_alignment",
    "meter_grid",
    "metrical_weights",
]
