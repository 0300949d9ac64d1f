"""Bit-identity of the grouped audio and prompt-datamodule arguments against the flat ones.

With the code of ``--before`` (a commit from before the grouping, exported with ``git archive``) and with
this tree's code, the same objects are built from the flat arguments (before) and the settings objects
(after), and everything they yield is saved and compared tensor by tensor:

* ``PromptDataModule``, ``SyntheticPromptDataModule``, ``AudioPromptDataModule``, ``TextPromptDataModule``
  (``split=PromptSplit(...)``): the train/held-out rows, every train and validation batch of one epoch
  and the saved state, with a fixed ``shuffle_seed`` and with ``None`` (drawn from torch's global RNG);
* ``AudioTokenDataModule`` (``crops=AudioCrops(...)``, ``split=FileSplit(...)``) on six tiny WAVs encoded
  by an ``EncodecTokenizer``: every train (random crops) and validation batch, and the tokenizer's codes;
* ``AudioSampleLogger`` (``clips=LoggedClips(...)``, ``sampling=SamplingConfig(...)``,
  ``schedule=LogSchedule(...)``): the audio and diversity one ``log_samples`` call logs.

    python benchmarks/audio_args_bit_identity.py --before 17c0768 --work /tmp/audio_args_bitid
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from configs_bit_identity import export  # noqa: E402  (one home for the old-code runner)

CSV = "file,genre,mood\na.wav,jazz,calm\nb.wav,techno,dark\nc.wav,jazz,\nd.wav,ambient,calm\ne.wav,techno,calm\nf.wav,jazz,dark\n"
TEXTS = ["calm piano", "loud rock guitar drums", "lo-fi beat", "jazz trio", "ambient pad", "techno kick"]


def dump(grouped: bool, work: Path, out: Path) -> None:
    """Build every object with the flat (``grouped=False``) or grouped arguments; save what it yields."""
    import torch

    from lightning_cfgrl.audio import (
        AudioPromptDataModule,
        AudioTokenDataModule,
        EncodecTokenizer,
        TextPromptDataModule,
        write_audio,
    )
    from lightning_cfgrl.experiments import SyntheticPromptDataModule
    from lightning_cfgrl.training.prompts import PromptDataModule
    from tests.helpers.audio import small_codec, tones
    from tests.helpers.musicgen import tiny_text_tokenizer

    torch.set_num_threads(1)
    saved: dict[str, Any] = {}

    def split(**flat: Any) -> dict[str, Any]:
        if not grouped:
            return flat
        from lightning_cfgrl.training.prompts import PromptSplit

        return {"split": PromptSplit(**flat)}

    def prompts(name: str, make: Any) -> None:
        for shuffle in ("fixed", "global"):
            torch.manual_seed(123)  # the global RNG draws the shuffle seed when it is None
            dm = make(shuffle)
            key = f"{name}/{shuffle}"
            saved[f"{key}/rows"] = (dm.train_prompts, dm.heldout_prompts)
            saved[f"{key}/train"] = list(dm.train_dataloader())
            saved[f"{key}/val"] = list(dm.val_dataloader())
            saved[f"{key}/state"] = dm.state_dict()

    rows = torch.randint(1, 5, (11, 3), generator=torch.Generator().manual_seed(0))
    prompts(
        "PromptDataModule",
        lambda s: PromptDataModule(
            rows,
            2,
            **split(heldout_fraction=0.3, split_seed=4, repeats=3, shuffle_seed=7 if s == "fixed" else None),
        ),
    )
    prompts("PromptDataModule_defaults", lambda s: PromptDataModule(rows))
    prompts(
        "SyntheticPromptDataModule",
        lambda s: SyntheticPromptDataModule(
            batch_size=4,
            **split(heldout_fraction=0.25, split_seed=1, repeats=2, shuffle_seed=0 if s == "fixed" else None),
        ),
    )
    prompts("SyntheticPromptDataModule_defaults", lambda s: SyntheticPromptDataModule())
    audio = work / "audio"
    audio.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate("abcdef"):
        write_audio(audio / f"{name}.wav", tones(1, 0.5, sample_rate=8000, seed=i)[0], 8000)
    (audio / "prompts.csv").write_text(CSV)
    prompts(
        "AudioPromptDataModule",
        lambda s: AudioPromptDataModule(
            str(audio / "prompts.csv"),
            batch_size=2,
            **split(heldout_fraction=0.34, split_seed=2, repeats=3, shuffle_seed=5 if s == "fixed" else None),
        ),
    )
    prompts(
        "TextPromptDataModule",
        lambda s: TextPromptDataModule(
            TEXTS,
            tokenizer=tiny_text_tokenizer(),
            max_length=4,
            batch_size=2,
            **split(heldout_fraction=0.34, split_seed=3, repeats=2, shuffle_seed=1 if s == "fixed" else None),
        ),
    )
    prompts(
        "TextPromptDataModule_defaults",
        lambda s: TextPromptDataModule(TEXTS, tokenizer=tiny_text_tokenizer()),
    )

    tok = EncodecTokenizer(small_codec(), bandwidth=2.5, batch_size=3)
    saved["EncodecTokenizer/encode"] = tok.encode(tones(2, 0.3), 4000)
    saved["EncodecTokenizer/model_id"] = tok.model_id
    for name, flat in {
        "given": dict(num_frames=40, crops_per_file=3, val_fraction=0.34, seed=3),
        "defaults": dict(num_frames=100),
    }.items():
        if grouped:
            from lightning_cfgrl.audio import AudioCrops, FileSplit

            crops = {"num_frames": flat["num_frames"], "per_file": flat.get("crops_per_file", 1)}
            file_split = {k: flat[k] for k in ("val_fraction", "seed") if k in flat}
            kwargs = {"crops": AudioCrops(**crops), "split": FileSplit(**file_split)}
        else:
            kwargs = flat
        dm = AudioTokenDataModule(str(audio), tok, batch_size=2, **kwargs)
        dm.setup("fit")
        torch.manual_seed(9)  # the random crops and the train order
        saved[f"AudioTokenDataModule/{name}/train"] = list(dm.train_dataloader())
        saved[f"AudioTokenDataModule/{name}/val"] = list(dm.val_dataloader())

    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from lightning_cfgrl.callbacks.audio_logger import AudioSampleLogger
    from lightning_cfgrl.models import AudioTokenTransformer
    from lightning_cfgrl.training.pretrain import PretrainModule

    for name, flat in {
        "given": dict(
            num_samples=3, num_frames=8, seed=5, guidance_scale=3.0, temperature=0.7, every_n_steps=7
        ),
        "defaults": dict(num_frames=8),
    }.items():
        if grouped:
            from lightning_cfgrl.callbacks.audio_logger import LoggedClips, LogSchedule
            from lightning_cfgrl.core.sampling import SamplingConfig

            clips = {k: v for k, v in flat.items() if k in ("num_samples", "num_frames", "seed")}
            sampling = {k: v for k, v in flat.items() if k in ("guidance_scale", "temperature")}
            schedule = {k: v for k, v in flat.items() if k == "every_n_steps"}
            callback = AudioSampleLogger(
                prompts=[[1, 2, 3], [2, 1, 1]],
                clips=LoggedClips(**clips),
                sampling=SamplingConfig(**sampling),
                schedule=LogSchedule(**schedule),
            )
        else:
            callback = AudioSampleLogger(prompts=[[1, 2, 3], [2, 1, 1]], **flat)
        torch.manual_seed(0)
        generator = AudioTokenTransformer(
            num_codebooks=2,
            vocab_size=32,
            condition_sizes=(4, 4, 3),
            dim=16,
            num_layers=1,
            num_heads=2,
            max_frames=16,
        )
        module = PretrainModule(generator)
        trainer = pl.Trainer(
            accelerator="cpu",
            logger=CSVLogger(str(work / f"logs_{grouped}_{name}")),
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        trainer.strategy.connect(module)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no TensorBoardLogger: WAV files, said once
            callback.setup(trainer, module, "fit")
        saved[f"AudioSampleLogger/{name}"] = callback.log_samples(trainer, module)
    torch.save(saved, out)


def same(a: Any, b: Any) -> bool:
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a commit with the flat arguments")
    parser.add_argument("--work", type=Path, required=True, help="an empty folder for the runs")
    parser.add_argument("--out", type=Path, default=None, help="also write the comparison to this JSON file")
    parser.add_argument("--dump", choices=["flat", "grouped"], help=argparse.SUPPRESS)  # one side, in-process
    args = parser.parse_args()
    if args.dump:
        dump(args.dump == "grouped", args.work / args.dump, args.work / f"{args.dump}.pt")
        return
    if not args.before:
        parser.error("--before is required")
    import torch

    args.work.mkdir(parents=True, exist_ok=True)
    old = export(args.before, args.work / "before_src")
    for code, side in ((old, "flat"), (ROOT, "grouped")):
        env = dict(os.environ, PYTHONPATH=str(code), OMP_NUM_THREADS="1")
        cmd = [sys.executable, str(Path(__file__).resolve()), "--work", str(args.work), "--dump", side]
        subprocess.run(cmd, cwd=code, env=env, check=True)
    before = torch.load(args.work / "flat.pt", weights_only=False)
    after = torch.load(args.work / "grouped.pt", weights_only=False)
    differ = sorted(k for k in before.keys() | after.keys() if not same(before.get(k), after.get(k)))
    report = {
        "before": args.before,
        "entries": len(after),
        "batches": sum(len(v) for v in after.values() if isinstance(v, list)),
        "differ": differ,
        "all_equal": not differ,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    if differ:
        raise SystemExit("the grouped arguments changed what the objects yield")


if __name__ == "__main__":
    main()
