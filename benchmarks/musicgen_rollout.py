"""The package's MusicGen rollout vs HF ``MusicgenForConditionalGeneration.generate()`` on the same model.

Same randomly initialised model for both, same prompts (T5 ids ``[B, 8]``), same sampling settings
(``do_sample``, temperature 1, top-k 250 = MusicGen's default, no top-p), the same number of decoded steps
(``max_new_tokens = frames + K - 1``, which makes HF return ``frames`` frames), with and without CFG
(guidance 3; HF builds its unconditional half the same way: zeroed text states and mask).

* ``ours``: ``lightning_cfgrl.sample(MusicgenGenerator(model), {"input_ids", "attention_mask"}, frames)``.
* ``hf``: ``model.generate(...)``. HF's ``generate`` always ends by decoding audio with EnCodec; here its
  ``audio_encoder.decode`` is replaced by a capture of the codes, so both sides stop at tokens.
* ``floor``: the bare loop of HF decoder forwards with its KV cache on tokens sampled beforehand (text
  encoder states precomputed; the doubled batch with CFG): what any sampler must pay.

Shapes: ``tiny`` (tests/helpers/musicgen.py: 2 layers, hidden 24, K 2, V 16) and ``small`` (musicgen-small:
decoder 24 layers, hidden 1024, 16 heads, FFN 4096, K 4, V 2048; T5-base text encoder; about 420 M
parameters with random weights, so fewer steps on a CPU). Runs are interleaved (ABBA) after a warm-up;
ratios are medians of per-round ratios. tokens/s counts batch x K x frames.

Distribution check (the tiny model with 2 and with 4 codebooks, the decoder's default initialisation,
whose tokens are far from deterministic): ``--draws`` sequences of ``--check-frames`` frames from each sampler
for one prompt; for every (codebook, frame) a chi-square test of the two samples' token counts (a 2 x V
contingency table; different RNGs, so the draws cannot be the same). Reported: the smallest p-value and
whether it passes at alpha 0.001 with Bonferroni over the positions.

    python benchmarks/musicgen_rollout.py [--shapes tiny small] [--rounds 3] [--device cpu] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from einops import rearrange

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from machine import (  # noqa: E402
    add_device_args,
    describe_machine,
    git_state,
    resolve_device,
    save_result,
    set_threads,
    synchronize,
)
from timing import best_ratio, interleaved, paired_ratio, summary_rows  # noqa: E402

import lightning_cfgrl  # noqa: E402
from lightning_cfgrl import SamplingConfig, sample  # noqa: E402
from lightning_cfgrl.adapters.musicgen import MusicgenGenerator, import_musicgen  # noqa: E402

GUIDANCE, TOP_K, PROMPT_LEN = 3.0, 250, 8
# per shape: frames and batch timed by default (musicgen-small is slow on a CPU: fewer steps)
SHAPES = {"tiny": dict(frames=48, batch=8), "small": dict(frames=12, batch=2)}


def build_model(
    hf: Any, shape: str, device: torch.device, initializer_factor: float | None = None, codebooks: int = 2
) -> Any:
    """A random MusicGen of ``shape``; ``initializer_factor`` overrides the tiny decoder's (20: peaky logits,
    nearly deterministic samples; 1: entropies of 0.7-2 nats per token, what the chi-square check needs)."""
    torch.manual_seed(0)
    if shape == "tiny":
        from tests.helpers.musicgen import tiny_config

        config = tiny_config(hf, num_codebooks=codebooks)
        if initializer_factor is not None:
            config.decoder.initializer_factor = initializer_factor
    else:
        from musicgen_memory import musicgen_config

        small = SimpleNamespace(vocab=2048, hidden=1024, layers=24, heads=16, ffn=4096, real_encoders=True)
        config = musicgen_config(hf, small)
    return hf.MusicgenForConditionalGeneration(config).to(device).eval()


def prompts(model: Any, batch: int, device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    vocab = model.config.text_encoder.vocab_size
    ids = torch.randint(3, vocab, (batch, PROMPT_LEN), generator=torch.Generator().manual_seed(seed))
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}


class CodeCapture:
    """Stands in for ``model.audio_encoder.decode`` so that ``generate`` returns after sampling tokens:
    keeps the codes ``[1, B, K, T]`` and returns no audio."""

    def __init__(self) -> None:
        self.codes: torch.Tensor | None = None

    def __call__(self, codes: torch.Tensor, audio_scales: Any = None, **kwargs: Any) -> Any:
        self.codes = codes
        return SimpleNamespace(audio_values=None)


def hf_frames(model: Any, cond: dict, frames: int, guidance: float, temperature: float = 1.0) -> torch.Tensor:
    """HF ``generate`` -> frames ``[B, K, T]`` (its audio decode replaced by :class:`CodeCapture`)."""
    capture = model.audio_encoder.decode
    if not isinstance(capture, CodeCapture):
        capture = model.audio_encoder.decode = CodeCapture()
    k = model.config.decoder.num_codebooks
    with torch.no_grad():
        model.generate(
            **cond,
            do_sample=True,
            max_new_tokens=frames + k - 1,
            top_k=TOP_K,
            temperature=temperature,
            guidance_scale=guidance if guidance != 1.0 else None,
        )
    return capture.codes[0]


def our_frames(
    adapter: MusicgenGenerator, cond: dict, frames: int, guidance: float, seed: Any, temperature: float = 1.0
) -> torch.Tensor:
    config = SamplingConfig(temperature=temperature, top_k=TOP_K, guidance_scale=guidance)
    return adapter.pattern.steps_to_frames(sample(adapter, cond, frames, config, seed=seed))


def floor_runner(
    adapter: MusicgenGenerator, cond: dict, frames: int, guidance: float, device: torch.device
) -> Callable[[], None]:
    """Bare HF decoder forwards with the KV cache over the decoder inputs of pre-sampled tokens."""
    config = SamplingConfig(top_k=TOP_K, guidance_scale=guidance)
    steps = sample(adapter, cond, frames, config, seed=0)
    if guidance != 1.0:
        steps = torch.cat([steps, steps])
        cond = {key: torch.cat([value, adapter.null_condition(cond)[key]]) for key, value in cond.items()}
    with torch.no_grad():
        states, mask = adapter.encoder_states(cond)
    valid = adapter.pattern.valid_mask(steps.shape[2], steps.device)
    ids = torch.where(valid, steps, adapter.start_id)
    inputs = torch.cat([torch.full_like(ids[..., :1], adapter.start_id), ids[..., :-1]], dim=-1)
    columns = [rearrange(inputs[..., s : s + 1], "b k s -> (b k) s") for s in range(inputs.shape[2])]
    model, cache_arg = adapter.model, adapter._cache_arg

    @torch.no_grad()
    def run() -> None:
        past = None
        for column in columns:
            out = model(
                encoder_outputs=(states,),
                attention_mask=mask,
                decoder_input_ids=column,
                use_cache=True,
                return_dict=True,
                **{cache_arg: past},
            )
            past = getattr(out, "cache", None) or out.past_key_values
        synchronize(device)

    return run


def chi_square(a: torch.Tensor, b: torch.Tensor, vocab: int) -> list[float]:
    """Per (codebook, frame) p-values of a chi-square test that frames ``a`` and ``b`` ``[N, K, T]`` draw
    their tokens from the same distribution (tokens seen in neither sample are dropped)."""
    from scipy.stats import chi2_contingency

    p_values = []
    for k in range(a.shape[1]):
        for t in range(a.shape[2]):
            table = torch.stack([torch.bincount(x[:, k, t], minlength=vocab) for x in (a, b)])
            table = table[:, table.sum(0) > 0]
            if table.shape[1] < 2:  # one token only, in both samples: identical
                p_values.append(1.0)
                continue
            p_values.append(float(chi2_contingency(table.numpy()).pvalue))
    return p_values


def distribution_check(
    model: Any, draws: int, frames: int, guidance: float, temperature: float = 1.0, alpha: float = 1e-3
) -> dict[str, Any]:
    """``draws`` sequences from each sampler for one prompt; per-position chi-square (see module docs).
    ``temperature`` is applied to the package's side only (a mismatch the test must detect)."""
    adapter = MusicgenGenerator(model).eval()
    cond = {key: value[:1].expand(draws, -1) for key, value in prompts(model, 1, model.device).items()}
    torch.manual_seed(1)  # HF draws from the global RNG
    theirs = hf_frames(model, cond, frames, guidance).cpu()
    ours = our_frames(adapter, cond, frames, guidance, seed=2, temperature=temperature).cpu()
    p = chi_square(ours, theirs, adapter.vocab_size)
    return {
        "draws": draws,
        "frames": frames,
        "guidance_scale": guidance,
        "temperature_ours": temperature,
        "positions": len(p),
        "min_p": min(p),
        "alpha": alpha,
        "same_distribution": min(p) > alpha / len(p),
    }


def time_shape(
    hf: Any, shape: str, args: argparse.Namespace, device: torch.device
) -> tuple[list, dict, dict]:
    model = build_model(hf, shape, device)
    adapter = MusicgenGenerator(model).eval()
    frames = args.frames or SHAPES[shape]["frames"]
    batch = args.batch or SHAPES[shape]["batch"]
    cond = prompts(model, batch, device)
    seeds = iter(range(1, 10**9))
    runners: dict[str, Callable[[], None]] = {}
    for guidance, suffix in ((1.0, ""), (GUIDANCE, "_cfg")):

        def ours(g: float = guidance) -> None:
            our_frames(adapter, cond, frames, g, seed=next(seeds))
            synchronize(device)

        def theirs(g: float = guidance) -> None:
            hf_frames(model, cond, frames, g)
            synchronize(device)

        runners[f"ours{suffix}"] = ours
        runners[f"hf{suffix}"] = theirs
        runners[f"floor{suffix}"] = floor_runner(adapter, cond, frames, guidance, device)
    times = interleaved(runners, args.rounds, label=f"{shape} ")
    tokens = batch * adapter.num_codebooks * frames
    rows = [{"shape": shape, "batch": batch, "frames": frames, **row} for row in summary_rows(times, tokens)]
    summary = {}
    for suffix in ("", "_cfg"):
        for key, a, b in (
            ("speedup_vs_hf", "hf", "ours"),
            ("ours_over_floor", "ours", "floor"),
            ("hf_over_floor", "hf", "floor"),
        ):
            summary[f"{key}{suffix}"] = paired_ratio(times, f"{a}{suffix}", f"{b}{suffix}")
            summary[f"{key}{suffix}_best"] = best_ratio(times, f"{a}{suffix}", f"{b}{suffix}")
    info = {"params": sum(p.numel() for p in model.parameters()), "batch": batch, "frames": frames}
    return rows, summary, info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_device_args(parser)
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=["tiny", "small"])
    parser.add_argument("--frames", type=int, default=None, help="frames per run (default: per shape)")
    parser.add_argument("--batch", type=int, default=None, help="prompts per run (default: per shape)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--draws", type=int, default=4000, help="sequences per sampler in the chi-square check"
    )
    parser.add_argument("--check-frames", type=int, default=4)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/musicgen_rollout.json"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    provenance = git_state()  # before the run: the code that runs, not what is committed meanwhile
    device = resolve_device(args.device)
    set_threads(args.threads)
    machine = describe_machine(device)
    hf = import_musicgen()
    checks = []
    for codebooks in (2, 4):  # 4: musicgen-small's pattern (delays 0..3)
        tiny = build_model(hf, "tiny", device, initializer_factor=1.0, codebooks=codebooks)
        for guidance in (1.0, GUIDANCE):
            checks.append(
                {"codebooks": codebooks, **distribution_check(tiny, args.draws, args.check_frames, guidance)}
            )
    # the test's power: a temperature of 1.3 on the package's side only must be detected
    checks.append(
        {"codebooks": 4, **distribution_check(tiny, args.draws, args.check_frames, GUIDANCE, temperature=1.3)}
    )
    for check in checks:
        print(f"distribution check: {check}", flush=True)
    records, summary, shapes = [], {}, {}
    for shape in args.shapes:
        rows, shape_summary, info = time_shape(hf, shape, args, device)
        records += rows
        summary[shape], shapes[shape] = shape_summary, info
    import transformers

    result = {
        "benchmark": "musicgen_rollout",
        "command": "python benchmarks/musicgen_rollout.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "config": {
            "rounds": args.rounds,
            "guidance_scale": GUIDANCE,
            "top_k": TOP_K,
            "temperature": 1.0,
            "prompt_len": PROMPT_LEN,
            "shapes": shapes,
            "tokens": "batch x codebooks x frames per run",
            "hf_audio_decode": "replaced by a capture of the codes (both sides stop at tokens)",
            "weights": "random init (cost does not depend on the weights)",
            "transformers_version": transformers.__version__,
            "package_version": lightning_cfgrl.__version__,
        },
        **provenance,
        "machine": machine,
        "machine_after": {"load_average_1_5_15": describe_machine(device).get("load_average_1_5_15")},
        "distribution_checks": checks,
        "records": records,
        "summary": summary,
    }
    save_result(result, args.out, markdown_table(result))
    return result


def markdown_table(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"MusicGen rollout vs HF generate ({m['device']}, {m['torch_threads']} threads)",
        "",
        "| shape | batch | frames | run | median s | tokens/s |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for r in result["records"]:
        lines.append(
            f"| {r['shape']} | {r['batch']} | {r['frames']} | {r['name']} | {r['median_s']:.3f} | "
            f"{r['tokens_per_s']:.0f} |"
        )
    lines.append("")
    for shape, s in result["summary"].items():
        lines.append(
            f"- {shape}: HF time / ours {s['speedup_vs_hf']:.2f}x (plain), {s['speedup_vs_hf_cfg']:.2f}x (CFG); "
            f"ours / floor {s['ours_over_floor']:.3f}x, {s['ours_over_floor_cfg']:.3f}x; "
            f"HF / floor {s['hf_over_floor']:.3f}x, {s['hf_over_floor_cfg']:.3f}x; best over best: HF / ours "
            f"{s['speedup_vs_hf_best']:.2f}x, {s['speedup_vs_hf_cfg_best']:.2f}x, ours / floor "
            f"{s['ours_over_floor_best']:.3f}x, {s['ours_over_floor_cfg_best']:.3f}x"
        )
    for c in result["distribution_checks"]:
        lines.append(
            f"- chi-square, K {c['codebooks']}, guidance {c['guidance_scale']:g}, our temperature {c['temperature_ours']:g}: min p "
            f"{c['min_p']:.3g} over {c['positions']} positions ({c['draws']} draws each): same distribution "
            f"{c['same_distribution']}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
