"""An evaluation's numbers that cannot be read as meant are reported with the fix: a saturated embedder,
a hypervolume reference no candidate passes."""

from __future__ import annotations

import pytest

from lightning_cfgrl.eval.candidates import CandidateResult
from lightning_cfgrl.eval.sanity import reference_above_every_point, saturated_embedder


def _result(name: str, quality: float, diversity: float) -> CandidateResult:
    return CandidateResult(name, {"q": (quality, 0.01), "diversity": (diversity, 0.001)}, 1, 1.0)


def test_a_saturated_embedder_is_named_with_the_fix():
    results = [
        _result("CFG g=1", -2.0, 0.951),
        _result("CFG g=3", -1.0, 0.949),
        _result("beta=15", -1.2, 0.955),
    ]
    message = saturated_embedder(results, "diversity", "evaluation embedder (embedder)")
    assert message is not None and "evaluation embedder (embedder) is saturated" in message
    assert "[0.949, 0.955]" in message and "TokenHistogramEmbedder" in message


@pytest.mark.parametrize("values", [(0.95, 0.90), (0.5, 0.51), (0.95,)])
def test_an_embedder_that_ranks_candidates_is_not_flagged(values):
    results = [_result(f"c{i}", 0.0, d) for i, d in enumerate(values)]
    assert saturated_embedder(results, "diversity", "e") is None


@pytest.mark.parametrize(
    ("sign", "reference", "flagged"), [(1.0, -0.5, True), (1.0, -1.5, False), (-1.0, -2.5, True)]
)
def test_a_reference_no_candidate_passes_is_named_with_the_fix(sign, reference, flagged):
    results = [_result("CFG g=1", -2.0, 0.5), _result("CFG g=3", -1.0, 0.4)]
    message = reference_above_every_point(results, "q", sign, (reference, 0.0))
    assert (message is not None) == flagged
    if flagged:
        assert "every hypervolume is 0" in message and "set reference: [" in message
