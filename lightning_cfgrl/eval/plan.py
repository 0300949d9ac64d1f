"""What ``cfgrl evaluate`` samples: the candidates, named and checked before anything is sampled.

:class:`Candidates` is the YAML block (``candidates:``); :func:`plan_candidates` turns it into
:class:`PlannedCandidate` rows (name, family, checkpoint, sampling config) and raises ``ValueError``
for every bad value it can see without sampling: unknown model names, a CFG reference outside the
guidance sweep, invalid sampling values, duplicates, an empty plan, a merged directory without
merged checkpoints. :func:`check_checkpoints` then loads every checkpoint once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from lightning_cfgrl.core.controls import DIVERSITY_WEIGHT, GUIDANCE, check_controls, expand_controls
from lightning_cfgrl.core.sampling import SamplingConfig
from lightning_cfgrl.eval.protocol import DEFAULT_CFG_REFERENCE
from lightning_cfgrl.io.checkpoints import CheckpointError
from lightning_cfgrl.io.generators import is_pretrained_folder, load_generator, load_pretrained_folder
from lightning_cfgrl.merging.merged_sets import complete_merged_sets

SAMPLING_FAMILIES = ("temperature", "top_p")  # what a user could do instead of CFG, at one pass per token


@dataclass
class Candidates:
    """The candidates of an evaluation.

    Args:
        base: checkpoint of the base model, sampled under the three sweeps below; or a local transformers
            folder (a MusicGen such as ``models/musicgen-small``: the base of a LoRA or MusicGen student).
        guidance_scales: CFG sweep of the base (``CFG g=<g>``; 1 = plain sampling).
        cfg_reference: the guidance scale whose candidate the claims compare against (by value; must be
            in ``guidance_scales``); ``None``: no CFG claims.
        temperatures: temperature sweep of the base, no CFG (``temperature <t>``).
        top_ps: top-p sweep of the base, no CFG (``top-p <p>``).
        distilled: ``{name: checkpoint}`` of students, sampled without CFG (``distilled <name>``).
        quality_model: the name in ``distilled`` of the quality model (beta = 0), for claim (a).
        diversity_model: the name in ``distilled`` of the diversity model (beta > 0), for claim (b).
        merged_dir: a ``cfgrl merge`` / ``ModelMergeCallback`` output folder (``merged lambda=<l>``).
        placebo: checkpoint of the shuffled-reward placebo (``placebo``), for claim (b).
        steerable: ``{name: checkpoint}`` of control-aware students (one training run, g and beta as
            inputs), each sampled without CFG at every control setting below
            (``steerable <name> g=<g> w=<w>``), like the CFG sweep at one pass per token.
        control_guidance_scales: the ``guidance_scale`` control values of the steerable sweep.
        control_diversity_weights: the ``diversity_weight`` control values (``None``: the students take
            no diversity control). The lowest is the quality setting the per-g claims use.
    """

    base: str | None = None
    guidance_scales: list[float] = field(default_factory=lambda: [1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0])
    cfg_reference: float | None = DEFAULT_CFG_REFERENCE
    temperatures: list[float] = field(default_factory=lambda: [0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    top_ps: list[float] = field(default_factory=lambda: [0.9, 0.8, 0.6])
    distilled: dict[str, str] = field(default_factory=dict)
    quality_model: str | None = None
    diversity_model: str | None = None
    merged_dir: str | None = None
    placebo: str | None = None
    steerable: dict[str, str] = field(default_factory=dict)
    control_guidance_scales: list[float] = field(default_factory=lambda: [1.0, 1.5, 2.0, 3.0, 4.0, 5.0])
    control_diversity_weights: list[float] | None = None


@dataclass(frozen=True)
class PlannedCandidate:
    """One row of the plan: ``checkpoint`` sampled with ``config``."""

    name: str
    family: str
    checkpoint: str
    config: SamplingConfig
    setting: dict  # what distinguishes it in its family; "cfg_reference" and "roles" mark the claims' roles
    controls: dict | None = None  # control values of a steerable student (``sample(controls=...)``)


def plan_candidates(candidates: Candidates) -> list[PlannedCandidate]:
    """The candidates in evaluation order (base sweeps, distilled, merged, placebo); see the module docs."""
    c = candidates
    sweeps = {"guidance_scales": c.guidance_scales, "temperatures": c.temperatures, "top_ps": c.top_ps}
    for key, values in sweeps.items():
        _check_sweep(key, values)
    if c.base is None and any(sweeps.values()):
        given = [k for k, v in sweeps.items() if v]
        raise ValueError(
            f"candidates.base is not set, but the sweeps {given} sample it; set base: <checkpoint>"
        )
    if c.cfg_reference is not None and c.base is not None:
        if not any(math.isclose(g, c.cfg_reference) for g in c.guidance_scales):
            raise ValueError(
                f"candidates.cfg_reference={c.cfg_reference:g} is not in candidates.guidance_scales "
                f"{[float(g) for g in c.guidance_scales]}; add it to the sweep or set cfg_reference: null"
            )
    for role in ("quality_model", "diversity_model"):
        name = getattr(c, role)
        if name is not None and name not in c.distilled:
            raise ValueError(
                f"candidates.{role}={name!r} is not a name in candidates.distilled {sorted(c.distilled)}"
            )
    plan: list[PlannedCandidate] = []
    if c.base is not None:
        for g in c.guidance_scales:
            reference = c.cfg_reference is not None and math.isclose(g, c.cfg_reference)
            setting = {"guidance_scale": float(g), "cfg_reference": reference}
            plan.append(_row(f"CFG g={g:g}", "cfg", c.base, "guidance_scale", g, setting))
        plan += [_row(f"temperature {t:g}", "temperature", c.base, "temperature", t) for t in c.temperatures]
        plan += [_row(f"top-p {p:g}", "top_p", c.base, "top_p", p) for p in c.top_ps]
    for name, path in c.distilled.items():
        roles = [r for r in ("quality_model", "diversity_model") if getattr(c, r) == name]
        plan.append(
            PlannedCandidate(f"distilled {name}", "distilled", str(path), SamplingConfig(), {"roles": roles})
        )
    for lam, path in merged_checkpoints(c.merged_dir) if c.merged_dir is not None else []:
        plan.append(
            PlannedCandidate(f"merged lambda={lam:g}", "merged", str(path), SamplingConfig(), {"lambda": lam})
        )
    if c.placebo is not None:
        plan.append(PlannedCandidate("placebo", "placebo", str(c.placebo), SamplingConfig(), {}))
    plan += _steerable_rows(c)
    if not plan:
        raise ValueError(
            "no candidates to evaluate: set candidates.base (with a sweep), candidates.distilled, "
            "candidates.merged_dir or candidates.placebo"
        )
    return plan


def _steerable_rows(c: Candidates) -> list[PlannedCandidate]:
    """One row per (student, g, w): sampled without CFG, the controls passed to ``sample``."""
    if not c.steerable:
        return []
    _check_sweep("control_guidance_scales", c.control_guidance_scales)
    weights = c.control_diversity_weights
    if weights is not None:
        _check_sweep("control_diversity_weights", weights)
    if not c.control_guidance_scales or weights == []:
        raise ValueError(
            "candidates.steerable needs control values: control_guidance_scales (and control_diversity_weights "
            f"unless null), got {c.control_guidance_scales} and {weights}"
        )
    for key, control, sweep in (
        ("control_guidance_scales", GUIDANCE, c.control_guidance_scales),
        ("control_diversity_weights", DIVERSITY_WEIGHT, weights or []),
    ):
        for value in sweep:  # the checks sample() makes, now rather than after the other candidates
            try:
                expand_controls({control: float(value)}, 1, 1)
            except (TypeError, ValueError) as err:
                raise ValueError(f"candidates.{key} value {value!r} is invalid: {err}") from err
    rows = []
    for name, path in c.steerable.items():
        for g in c.control_guidance_scales:
            for w in weights if weights is not None else [None]:
                controls = {GUIDANCE: float(g)} | ({DIVERSITY_WEIGHT: float(w)} if w is not None else {})
                label = f"steerable {name} g={g:g}" + (f" w={w:g}" if w is not None else "")
                setting = {"model": name, **controls, "quality_setting": w is None or w == min(weights)}
                rows.append(
                    PlannedCandidate(label, "steerable", str(path), SamplingConfig(), setting, controls)
                )
    return rows


def merged_checkpoints(merged_dir: str) -> list[tuple[float, Path]]:
    """``(lambda, .ckpt)`` of the complete merged sets of a merge output folder, sorted by lambda."""
    folder = Path(merged_dir)
    if not folder.is_dir():
        raise ValueError(
            f"candidates.merged_dir {merged_dir!r} is not a folder (expected cfgrl merge's --out)"
        )
    found = []
    # only complete sets: a sidecar whose sha256 match the files beside it (an interrupted merge has none)
    for lam, files in complete_merged_sets(folder):
        if files.checkpoint is None or not files.checkpoint.is_file():
            raise ValueError(
                f"{files.sidecar.name} in {merged_dir} has no merged Lightning checkpoint beside it: evaluate "
                "needs one (cfgrl merge writes it when --quality is a .ckpt)"
            )
        found.append((lam, files.checkpoint))
    if not found:
        raise ValueError(
            f"candidates.merged_dir {merged_dir!r} holds no merged checkpoints (merged_lambda=*.json)"
        )
    return sorted(found)


def check_checkpoints(plan: list[PlannedCandidate], num_frames: int) -> dict[str, tuple[int, int]]:
    """Load every distinct checkpoint once (weights only) and check it can sample ``num_frames``; all
    must share ``(num_codebooks, vocab_size)``, which is returned per path."""
    shapes: dict[str, tuple[int, int]] = {}
    for path in dict.fromkeys(row.checkpoint for row in plan):
        generator = load_candidate(path, [row.name for row in plan if row.checkpoint == path])
        _check_frames_fit(generator, num_frames, path)
        for row in (r for r in plan if r.checkpoint == path and r.controls):
            try:
                check_controls(generator, expand_controls(row.controls, 1, 1), 1)
            except ValueError as err:
                raise ValueError(f"candidate {row.name!r} ({path}): {err}") from err
        shapes[path] = (int(generator.num_codebooks), int(generator.vocab_size))
        del generator
    if len(set(shapes.values())) > 1:
        listing = ", ".join(f"{p}: K={k}, V={v}" for p, (k, v) in shapes.items())
        raise ValueError(f"the candidates' generators disagree on (num_codebooks, vocab_size): {listing}")
    return shapes


def load_candidate(path: str, names: list[str] | None = None) -> nn.Module:
    """``load_generator(path)``, with the candidates that use the checkpoint named in any error."""
    who = ""
    if names:
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        who = f" (candidates {shown})"
    folder = is_pretrained_folder(path)
    if not (folder or Path(path).is_file()):
        raise ValueError(
            f"checkpoint {path!r}{who} does not exist or is not a file (nor a transformers folder with a "
            "config.json, such as a local MusicGen)"
        )
    try:
        return load_pretrained_folder(path) if folder else load_generator(path)
    except (CheckpointError, ValueError, RuntimeError, TypeError, OSError) as err:
        raise ValueError(f"cannot load the generator of checkpoint {path!r}{who}: {err}") from err


def _check_frames_fit(generator: nn.Module, num_frames: int, path: str) -> None:
    max_steps, pattern = getattr(generator, "max_steps", None), generator.pattern
    if isinstance(max_steps, int) and pattern.num_steps(num_frames) > max_steps:
        raise ValueError(
            f"num_frames={num_frames} needs {pattern.num_steps(num_frames)} decoding steps, more than the "
            f"max_steps={max_steps} of the generator in {path!r}; lower num_frames"
        )


def _check_sweep(key: str, values: list[float]) -> None:
    if len({float(v) for v in values}) != len(values):
        raise ValueError(f"candidates.{key} has duplicates: {list(values)}")


def _row(
    name: str, family: str, base: str, field_name: str, value: float, setting: dict | None = None
) -> PlannedCandidate:
    try:
        config = SamplingConfig(**{field_name: float(value)})
    except ValueError as err:
        raise ValueError(f"candidates: {family} sweep value {value!r} is invalid: {err}") from err
    return PlannedCandidate(name, family, str(base), config, setting or {field_name: float(value)})


__all__ = [
    "SAMPLING_FAMILIES",
    "Candidates",
    "PlannedCandidate",
    "check_checkpoints",
    "load_candidate",
    "merged_checkpoints",
    "plan_candidates",
]
