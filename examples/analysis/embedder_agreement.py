"""Do the two diversity embedders measure different things? Rank agreement over the claims' candidates.

    python examples/analysis/embedder_agreement.py   # reads benchmarks/results/recipe_claims_{music,hmm}.json

The claims report diversity twice: bigram histograms (``diversity``, no parameters) and the reward's own
contrastive embedder (``reward_diversity``). If both rank every candidate alike, agreement between them
cannot tell a real diversity gain from reward hacking: both may only count token statistics. Spearman's
rank correlation over the candidates other than the temperature / top-p ones (whose diversity comes from
flattening the distribution, which both embedders see the same way). Files that also carry the
latent-mode diversity (``latent_diversity``: the exact posterior over the domain's latent mode, an
embedder of another kind that counts no token statistics) get its agreement with each of the two. Saves
``benchmarks/results/embedder_agreement.json`` with the machine and commit.
"""

from __future__ import annotations

import json
from pathlib import Path

from lightning_cfgrl.eval.machine import describe_machine
from lightning_cfgrl.io.checkpoints import atomic_save_json

RESULTS = Path("benchmarks/results")


def ranks(values: list[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions)."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2
        i = j + 1
    return out


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = ranks(a), ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    return cov / (sum((x - ma) ** 2 for x in ra) * sum((y - mb) ** 2 for y in rb)) ** 0.5


def analyse(path: Path) -> dict:
    rows = [r for r in json.loads(path.read_text())["results"] if r["family"] not in ("temperature", "top_p")]
    bigram = [r["metrics"]["diversity"][0] for r in rows]
    reward = [r["metrics"]["reward_diversity"][0] for r in rows]
    out = {"file": path.name, "candidates": [r["name"] for r in rows], "spearman": spearman(bigram, reward)}
    if all("latent_diversity" in r["metrics"] for r in rows):
        latent = [r["metrics"]["latent_diversity"][0] for r in rows]
        out["spearman_latent_vs_reward"] = spearman(latent, reward)
        out["spearman_latent_vs_bigram"] = spearman(latent, bigram)
    return out


def main() -> None:
    rows = [analyse(RESULTS / f"recipe_claims_{name}.json") for name in ("music", "hmm")]
    for r in rows:
        print(
            f"{r['file']}: Spearman bigram vs reward {r['spearman']:.3f} over {len(r['candidates'])} candidates"
        )
        if "spearman_latent_vs_reward" in r:
            print(
                f"  latent mode vs reward {r['spearman_latent_vs_reward']:.3f}, "
                f"vs bigram {r['spearman_latent_vs_bigram']:.3f}"
            )
    out = RESULTS / "embedder_agreement.json"
    command = "python examples/analysis/embedder_agreement.py"
    atomic_save_json({"command": command, "rows": rows, "machine": describe_machine()}, out)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
