"""Tiny EnCodec models and test audio (nothing downloads): a k-means-initialised SEANet codec and an
exactly invertible one, plus random tones."""

from __future__ import annotations

import functools
import math
import warnings

import torch
from torch import nn

SR = 4000  # codec sample rate in these tests
HOP = 16


def tones(n: int, seconds: float, sample_rate: int = SR, seed: int = 0) -> torch.Tensor:
    """``[n, 1, L]`` random sines (100-800 Hz, random amplitude and phase) plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(round(seconds * sample_rate)) / sample_rate
    freq = 100 + 700 * torch.rand(n, 1, 1, generator=g)
    amp = 0.2 + 0.6 * torch.rand(n, 1, 1, generator=g)
    phase = 2 * math.pi * torch.rand(n, 1, 1, generator=g)
    return amp * torch.sin(2 * math.pi * freq * t + phase) + 0.02 * torch.randn(n, 1, t.numel(), generator=g)


def _seanet_architecture() -> nn.Module:
    from lightning_cfgrl.adapters.encodec_import import import_encodec

    encodec = import_encodec()
    seanet = dict(channels=1, dimension=16, n_filters=4, n_residual_layers=1, ratios=[4, 4], lstm=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's weight_norm deprecation, inside encodec
        return encodec.EncodecModel(
            encodec.modules.SEANetEncoder(**seanet),
            encodec.modules.SEANetDecoder(**seanet),
            encodec.quantization.ResidualVectorQuantizer(dimension=16, n_q=2, bins=32, kmeans_iters=5),
            target_bandwidths=[1.25, 2.5],
            sample_rate=SR,
            channels=1,  # 5 bits x 250 frames/s per codebook
        )


@functools.cache
def _seanet_state() -> dict[str, torch.Tensor]:
    from lightning_cfgrl.embedders.encodec_audio import init_codebooks

    torch.manual_seed(0)
    codec = init_codebooks(_seanet_architecture(), tones(8, 1.0))
    return {k: v.detach().clone() for k, v in codec.state_dict().items()}


def small_codec() -> nn.Module:
    """A fresh tiny SEANet EnCodec (hop 16 at 4 kHz, 2 codebooks of 32), codebooks k-means-initialised on
    1 s of tones (built once per session; weight-normed modules cannot be deep-copied, so rebuilt)."""
    codec = _seanet_architecture()
    codec.load_state_dict(_seanet_state())
    return codec.eval()


class _Analysis(nn.Conv1d):
    """Frames of HOP samples -> coefficients in an orthonormal basis (an exactly invertible encoder)."""

    def __init__(self, basis: torch.Tensor) -> None:
        super().__init__(1, HOP, HOP, stride=HOP, bias=False)
        self.weight.data = basis[:, None, :].clone()
        self.ratios, self.hop_length = [HOP], HOP


class _Synthesis(nn.ConvTranspose1d):
    def __init__(self, basis: torch.Tensor) -> None:
        super().__init__(HOP, 1, HOP, stride=HOP, bias=False)
        self.weight.data = basis[:, None, :].clone()


def invertible_codec() -> nn.Module:
    """An ``EncodecModel`` whose encoder/decoder invert each other exactly (an orthonormal frame
    transform) around the real residual VQ: what a trained codec approximates. A random SEANet pair
    does not invert at all, so token round trips can only be tested on a codec like this one."""
    from lightning_cfgrl.adapters.encodec_import import import_encodec
    from lightning_cfgrl.embedders.encodec_audio import init_codebooks

    encodec = import_encodec()
    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(HOP, HOP))[0]
    codec = encodec.EncodecModel(
        _Analysis(basis),
        _Synthesis(basis),
        encodec.quantization.ResidualVectorQuantizer(dimension=HOP, n_q=2, bins=32, kmeans_iters=10),
        target_bandwidths=[1.25, 2.5],
        sample_rate=SR,
        channels=1,
    )
    return init_codebooks(codec, tones(16, 1.0, seed=1)).eval()
