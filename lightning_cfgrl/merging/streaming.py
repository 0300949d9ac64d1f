"""Weight-space merging of two models: theta(lam) = (1 - lam) * theta_anchor + lam * theta_current.

Plain torch (no Lightning). In the paper's use the anchor is the quality model (beta = 0) and the
current model the diversity model (beta > 0); lam steers between them at no inference cost. Merging
is streamed tensor by tensor, so writing a merged model costs about two models of memory (the two
sources, lazily mapped) however many lambdas are written, and each output is written atomically.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lightning_cfgrl.io.checkpoints import (
    TRAINING_STATE_KEYS,
    load_safetensors,
    naming_write_errors,
    safetensors_order,
    strip_prefix,
    write_safetensors,
)
from lightning_cfgrl.io.file_sets import (
    StagedFileSet,
    file_hashes,
)
from lightning_cfgrl.merging.consistency import MergeError
from lightning_cfgrl.merging.merged_sets import MergedFiles, lambda_tag, merged_paths

METHODS = ("lerp", "slerp")
StateDict = Mapping[str, Tensor]


# ------------------------------------------------------------------------------------------ tensor math


def lerp(a: Tensor, b: Tensor, lam: float) -> Tensor:
    """``(1 - lam) * a + lam * b`` for floating tensors of one shape; same dtype as ``a``.

    lam = 0 and lam = 1 return exact copies of ``a`` and ``b`` (the formula would turn -0.0 into 0.0).
    Half precision is computed in float32 and rounded once at the end.
    """
    if lam == 0:
        return a.clone()
    if lam == 1:
        return b.clone()
    compute = torch.float64 if a.dtype == torch.float64 else torch.float32
    out = a.to(compute) * (1.0 - lam)
    out.add_(b.to(compute), alpha=lam)
    return out.to(a.dtype)


def slerp(a: Tensor, b: Tensor, lam: float, eps: float = 1e-6) -> Tensor:
    """Spherical interpolation of two floating tensors of one shape, seen as flat vectors.

    With theta the angle between ``a`` and ``b``:
    ``sin((1 - lam) theta) / sin(theta) * a + sin(lam theta) / sin(theta) * b`` (mergekit's convention:
    the angle comes from the directions, the weights apply to the unnormalised tensors). Computed in
    float64, returned in ``a``'s dtype. Falls back to :func:`lerp` where the angle is ill-defined or
    degenerate: either tensor zero, or ``1 - |cos theta| < eps`` (nearly parallel or antiparallel).
    """
    if lam == 0:
        return a.clone()
    if lam == 1:
        return b.clone()
    a64 = a.reshape(-1).to(torch.float64)
    b64 = b.reshape(-1).to(torch.float64)
    norm_a, norm_b = torch.linalg.vector_norm(a64).item(), torch.linalg.vector_norm(b64).item()
    if norm_a == 0.0 or norm_b == 0.0:
        return lerp(a, b, lam)
    cos = min(1.0, max(-1.0, torch.dot(a64, b64).item() / (norm_a * norm_b)))
    if 1.0 - abs(cos) < eps:
        return lerp(a, b, lam)
    theta = math.acos(cos)
    sin_theta = math.sin(theta)
    out = a64 * (math.sin((1.0 - lam) * theta) / sin_theta)
    out.add_(b64, alpha=math.sin(lam * theta) / sin_theta)
    return out.reshape(a.shape).to(a.dtype)


def merge_tensor(a: Tensor, b: Tensor, lam: float, method: str = "lerp") -> Tensor:
    """One merged tensor on CPU: anchor ``a`` at lam = 0, current ``b`` at lam = 1.

    Only floating tensors are interpolated: an integer or bool buffer (a step counter, a mask) has no
    meaningful midpoint, so it is copied from ``b`` (from ``a`` at lam = 0, which reproduces the anchor).
    """
    a, b = a.detach().cpu(), b.detach().cpu()
    if lam == 0:
        return a.clone()
    if lam == 1 or not a.is_floating_point():
        return b.clone()
    return slerp(a, b, lam) if method == "slerp" else lerp(a, b, lam)


# ----------------------------------------------------------------------------------------- validation


def check_method(method: str) -> str:
    """Return ``method`` if it is a known merge method, else raise :class:`MergeError`."""
    if method not in METHODS:
        raise MergeError(f"method must be one of {METHODS}, got {method!r}")
    return method


def check_lambda(lam: float, allow_extrapolation: bool = False) -> float:
    """Return ``lam`` as a float if it is finite and, unless extrapolating, in [0, 1]."""
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real):
        raise MergeError(f"lambda must be a real number, got {lam!r}")
    value = float(lam) + 0.0  # + 0.0 turns -0.0 into 0.0
    if not math.isfinite(value):
        raise MergeError(f"lambda must be finite, got {lam!r}")
    if not allow_extrapolation and not 0.0 <= value <= 1.0:
        raise MergeError(
            f"lambda must be in [0, 1] (0 = anchor, 1 = current), got {value}; "
            "pass allow_extrapolation=True to go beyond the two models"
        )
    return value


def check_lambdas(lambdas: Sequence[float], allow_extrapolation: bool = False) -> tuple[float, ...]:
    """Validate a non-empty sequence of distinct lambdas (distinct after the 2-decimal file tag)."""
    if not lambdas:
        raise MergeError("lambdas must name at least one value in [0, 1], got an empty sequence")
    lams = tuple(check_lambda(lam, allow_extrapolation) for lam in lambdas)
    tags = [lambda_tag(lam) for lam in lams]
    repeated = sorted({t for t in tags if tags.count(t) > 1})
    if repeated:
        raise MergeError(f"lambdas must be distinct, got {list(lambdas)} (repeated: {repeated})")
    return lams


def check_mergeable(anchor: StateDict, current: StateDict, max_listed: int = 5) -> None:
    """Raise :class:`MergeError` unless both state dicts have the same keys, shapes and dtypes.

    Reads only tensor metadata, so lazily mapped sources are not paged in. The message lists the first
    ``max_listed`` mismatches of each kind.
    """
    problems: list[str] = []
    missing = [k for k in anchor if k not in current]
    extra = [k for k in current if k not in anchor]
    if missing:
        problems.append(f"{len(missing)} key(s) only in the anchor: {missing[:max_listed]}")
    if extra:
        problems.append(f"{len(extra)} key(s) only in the current model: {extra[:max_listed]}")
    not_tensors = sorted({k for sd in (anchor, current) for k, v in sd.items() if not isinstance(v, Tensor)})
    if not_tensors:
        raise MergeError(f"state dict entries must be tensors; these are not: {not_tensors[:max_listed]}")
    shared = [k for k in anchor if k in current]
    shapes = [
        f"{k}: {tuple(anchor[k].shape)} vs {tuple(current[k].shape)}"
        for k in shared
        if anchor[k].shape != current[k].shape
    ]
    dtypes = [
        f"{k}: {anchor[k].dtype} vs {current[k].dtype}" for k in shared if anchor[k].dtype != current[k].dtype
    ]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) (anchor vs current): {shapes[:max_listed]}")
    if dtypes:
        problems.append(f"{len(dtypes)} dtype mismatch(es) (anchor vs current): {dtypes[:max_listed]}")
    if problems:
        raise MergeError("state dicts are not compatible for merging: " + "; ".join(problems))
    if not anchor:
        raise MergeError("nothing to merge: both state dicts are empty")


def check_finite(state: StateDict, name: str) -> None:
    """Raise :class:`MergeError` naming the first key of ``state`` that holds a NaN or infinity."""
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise MergeError(
                f"{name} tensor {key!r} has non-finite values (NaN or inf); refusing to merge it"
            )


def validate_merge(
    anchor: StateDict,
    current: StateDict,
    lambdas: Iterable[float],
    allow_extrapolation: bool = False,
    check_values: bool = True,
) -> None:
    """Every check a merge needs, done once before anything is written.

    Compatibility (keys, shapes, dtypes), each lambda's range, and with ``check_values`` that every
    floating tensor of both sources is finite (this reads both sources once).
    """
    for lam in lambdas:
        check_lambda(lam, allow_extrapolation)
    check_mergeable(anchor, current)
    if check_values:
        check_finite(anchor, "anchor")
        check_finite(current, "current")


# ------------------------------------------------------------------------------------- state dicts


def iter_merged(
    anchor: StateDict,
    current: StateDict,
    lam: float,
    method: str = "lerp",
    allow_extrapolation: bool = False,
    keys: Sequence[str] | None = None,
    validate: bool = True,
) -> Iterator[tuple[str, Tensor]]:
    """Yield ``(key, merged tensor)`` one at a time, in ``keys`` order (default: the anchor's).

    Validation (unless ``validate=False``, for callers that ran :func:`validate_merge` already) happens
    here, before the first tensor is yielded, not lazily on first iteration.
    """
    check_method(method)
    lam = check_lambda(lam, allow_extrapolation)
    if validate:
        validate_merge(anchor, current, [lam], allow_extrapolation)
    order = list(anchor) if keys is None else list(keys)

    def generate() -> Iterator[tuple[str, Tensor]]:
        for key in order:
            merged = merge_tensor(anchor[key], current[key], lam, method)
            # Within [0, 1] a finite merge of finite tensors stays finite; extrapolation can overflow.
            if (lam < 0 or lam > 1) and merged.is_floating_point() and not bool(torch.isfinite(merged).all()):
                raise MergeError(f"extrapolating to lambda={lam} overflows tensor {key!r} ({merged.dtype})")
            yield key, merged

    return generate()


def merge_state_dicts(
    anchor: StateDict,
    current: StateDict,
    lam: float,
    method: str = "lerp",
    allow_extrapolation: bool = False,
) -> dict[str, Tensor]:
    """theta(lam) = (1 - lam) * anchor + lam * current, as a new CPU state dict (anchor's key order).

    See :func:`merge_tensor` for integer buffers and :func:`iter_merged` to stream instead.
    """
    return dict(iter_merged(anchor, current, lam, method, allow_extrapolation))


# ------------------------------------------------------------------------------------------ writing


def merged_checkpoint(
    template: Mapping[str, Any], generator_state: StateDict, prefix: str = "generator."
) -> dict:
    """A Lightning checkpoint dict: ``template`` with its ``prefix`` weights replaced.

    Optimizer, scheduler and callback states are dropped: they belong to the run that produced the
    template (and callback state may hold a teacher or embedder), not to the merged model.
    """
    state_dict = dict(template["state_dict"])
    have = set(strip_prefix(state_dict, prefix))
    if have != set(generator_state):
        diff = sorted(have.symmetric_difference(generator_state))
        raise MergeError(f"checkpoint template's '{prefix}*' keys differ from the merged weights: {diff[:5]}")
    for key, tensor in generator_state.items():
        state_dict[prefix + key] = tensor
    ckpt = {k: v for k, v in template.items() if k not in TRAINING_STATE_KEYS}
    ckpt["state_dict"] = state_dict
    return ckpt


@dataclass(frozen=True)
class MergeOutput:
    """Where and what :func:`write_merged` writes, the same for every lambda of one merge.

    Args:
        out_dir: the folder of the merged sets (``merged_lambda=<tag>.{safetensors,ckpt,json}``).
        checkpoint_template: returns the Lightning checkpoint whose ``prefix`` weights are replaced to
            make the ``.ckpt`` (see :func:`merged_checkpoint`); None: no ``.ckpt`` is written.
        prefix: where the generator's weights sit in the template's ``state_dict``.
        sidecar: extra entries recorded in the sidecar JSON and in the ``.ckpt``'s ``cfgrl_merge``
            (the sources, who made it).
    """

    out_dir: str | os.PathLike[str]
    checkpoint_template: Callable[[], Mapping[str, Any]] | None = None
    prefix: str = "generator."
    sidecar: Mapping[str, Any] | None = None


def write_merged(
    anchor: Callable[[], StateDict],
    current: Callable[[], StateDict],
    lam: float,
    output: MergeOutput | str | os.PathLike[str],
    method: str = "lerp",
    allow_extrapolation: bool = False,
    validate: bool = True,
) -> MergedFiles:
    """Write theta(lam) as safetensors (generator keys), Lightning ``.ckpt`` and JSON sidecar.

    ``anchor``/``current`` are called to open the sources (ideally lazily mapped) and are released
    before the ``.ckpt`` is built from the freshly written safetensors file, mapped; so peak memory is
    about two models. ``output``: the folder and the ``.ckpt`` template (:class:`MergeOutput`; a bare
    folder writes the safetensors file and the sidecar only). ``validate=False`` skips the checks of
    :func:`validate_merge`, for callers that ran it once for all their lambdas.

    The files appear as a set (:class:`~lightning_cfgrl.io.file_sets.StagedFileSet`): the sidecar,
    which records the sha256 of the other files, is removed first and written last, so an error or a
    kill at any moment leaves the previous set, or model files without a sidecar (which
    :func:`complete_merged_sets` skips), never a sidecar describing other files. Callers writing several
    lambdas hold :func:`merge_output_dir` around them.
    """
    if not isinstance(output, MergeOutput):
        output = MergeOutput(output)
    check_method(method)
    lam = check_lambda(lam, allow_extrapolation)
    checkpoint_template = output.checkpoint_template
    paths = merged_paths(output.out_dir, lam, with_checkpoint=checkpoint_template is not None)
    info = {
        "lambda": lam,
        "method": method,
        "allow_extrapolation": allow_extrapolation,
        "package_version": _package_version(),
        **(output.sidecar or {}),
    }
    data_files = {"safetensors": paths.safetensors}
    if paths.checkpoint is not None:
        data_files["checkpoint"] = paths.checkpoint
    # disk full / read-only: one error naming the folder, not the chain of a failed write and its cleanup
    with (
        naming_write_errors(paths.sidecar.parent),
        StagedFileSet(paths.sidecar, list(data_files.values())) as staged,
    ):
        f_tensors = staged.open(paths.safetensors)
        num_keys, num_interpolated = _stream_merge(
            anchor,
            current,
            lam,
            method,
            allow_extrapolation,
            validate,
            f_tensors,
            metadata={"format": "pt", "cfgrl_lambda": repr(lam), "cfgrl_method": method},
        )
        info.update(num_keys=num_keys, num_interpolated=num_interpolated)
        if checkpoint_template is not None and paths.checkpoint is not None:
            f_tensors.flush()
            # The sources are closed by now; map the merged weights back rather than keep a third copy.
            merged = load_safetensors(staged.staged(paths.safetensors), mmap=True)
            torch.save(
                {**merged_checkpoint(checkpoint_template(), merged, output.prefix), "cfgrl_merge": info},
                staged.open(paths.checkpoint),
            )
            del merged
        staged.finish()
        hashes = file_hashes({role: staged.staged(path) for role, path in data_files.items()})
        files = {role: path.name for role, path in data_files.items()}
        staged.commit({**info, "files": files, "sha256": hashes})
    return paths


def _stream_merge(
    open_anchor: Callable[[], StateDict],
    open_current: Callable[[], StateDict],
    lam: float,
    method: str,
    allow_extrapolation: bool,
    validate: bool,
    f: Any,
    metadata: Mapping[str, str],
) -> tuple[int, int]:
    # A function of its own so that the sources' last references die when it returns.
    anchor, current = open_anchor(), open_current()
    if validate:
        validate_merge(anchor, current, [lam], allow_extrapolation)
    else:
        check_mergeable(anchor, current)  # cheap (metadata only), and the writer relies on it
    specs = {k: (t.dtype, tuple(t.shape)) for k, t in anchor.items()}
    order = safetensors_order(specs)
    merged = iter_merged(anchor, current, lam, method, allow_extrapolation, keys=order, validate=False)
    write_safetensors(f, specs, merged, metadata)
    return len(specs), sum(1 for t in anchor.values() if t.is_floating_point())


def _package_version() -> str:
    import lightning_cfgrl

    return lightning_cfgrl.__version__
