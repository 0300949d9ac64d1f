"""``cfgrl --import MODULE`` / ``CFGRL_IMPORT``: the user's own modules are trusted for every command, and
still nothing named inside a file is imported."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lightning_cfgrl.cli.imports import split_imports
from lightning_cfgrl.cli.main import main
from lightning_cfgrl.io import specs

ROOT = Path(__file__).resolve().parents[1]

# an own model whose import leaves a mark: the test can tell whether a file made Python import it
OWN_MODEL = textwrap.dedent(
    """
    import os
    from pathlib import Path

    from torch import nn

    from lightning_cfgrl.core.generator import class_spec

    Path(os.environ["OWN_MODEL_MARK"]).write_text("imported")


    class TinyGRU(nn.Module):
        def __init__(self, vocab_size: int = 8, dim: int = 8):
            super().__init__()
            self._args = dict(vocab_size=vocab_size, dim=dim)
            self.v = vocab_size
            self.emb = nn.Embedding(vocab_size + 1, dim)
            self.cond = nn.Embedding(3, dim)
            self.rnn = nn.GRU(dim, dim, batch_first=True)
            self.out = nn.Linear(dim, vocab_size)

        def spec(self):
            return class_spec(self, self._args)

        def forward(self, tokens, condition):
            h, _ = self.rnn(self.emb(tokens[:, 0]) + self.cond(condition[:, 0])[:, None])
            return self.out(h)[:, None]
    """
)

SAVE = textwrap.dedent(
    """
    import sys, torch
    import own_gru
    from lightning_cfgrl import ModuleAdapter
    gen = ModuleAdapter(own_gru.TinyGRU(), num_codebooks=1, vocab_size=8, bos_id=8, null_condition=0)
    state = {"generator." + k: v for k, v in gen.state_dict().items()}
    torch.save({"hyper_parameters": {"generator": gen.spec(), "num_frames": 5}, "state_dict": state}, sys.argv[1])
    """
)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CFGRL_IMPORT",)}
    env["PYTHONPATH"] = str(ROOT)
    env["OWN_MODEL_MARK"] = str(tmp_path / "mark")
    env.update(extra)
    return env


def _cfgrl(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "lightning_cfgrl.cli.main", *args]
    return subprocess.run(
        cmd, cwd=tmp_path, env=_env(tmp_path, **env), capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def own_checkpoint(tmp_path: Path) -> Path:
    """A checkpoint whose generator spec names ``own_gru.TinyGRU`` (in ``tmp/models/own_gru.py``)."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "own_gru.py").write_text(OWN_MODEL)
    path = tmp_path / "own.ckpt"
    env = _env(tmp_path, PYTHONPATH=f"{ROOT}{os.pathsep}{models}")
    subprocess.run([sys.executable, "-c", SAVE, str(path)], env=env, check=True, cwd=tmp_path)
    (tmp_path / "mark").unlink()
    return path


def test_a_checkpoint_of_an_own_model_is_refused_naming_the_option(tmp_path, own_checkpoint):
    # the module is on the path, so a file naming it *could* make Python import it: it must not
    args = ["generate", "--checkpoint", str(own_checkpoint), "--prompts", "[[1], [2]]", "--out", "gen"]
    result = _cfgrl(
        args + ["--progress", "false"], tmp_path, PYTHONPATH=f"{ROOT}{os.pathsep}{tmp_path / 'models'}"
    )
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert "its module 'own_gru' is not imported" in last
    assert "--import own_gru" in last and "CFGRL_IMPORT=own_gru" in last
    assert not (tmp_path / "mark").exists(), "a name read from a checkpoint imported a module"


@pytest.mark.parametrize("how", ["file", "env"])
def test_import_option_and_env_var_trust_an_own_model(tmp_path, own_checkpoint, how):
    models = tmp_path / "models"
    env: dict[str, str] = {}
    args = ["generate", "--checkpoint", str(own_checkpoint), "--prompts", "[[1], [2]]", "--out", "gen"]
    args += ["--num_samples", "3", "--progress", "false"]
    if how == "file":
        args = ["--import", str(models / "own_gru.py"), *args]  # before the command
    else:
        env.update(CFGRL_IMPORT=" own_gru, ", PYTHONPATH=f"{ROOT}{os.pathsep}{models}")
    result = _cfgrl(args, tmp_path, **env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "mark").exists()
    from safetensors.torch import load_file

    frames = load_file(tmp_path / "gen" / "tokens.safetensors")["frames"]
    assert tuple(frames.shape) == (6, 1, 5)
    assert int(frames.min()) >= 0 and int(frames.max()) < 8


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--import", "no_such_module_xyz", "generate", "--help"], "no module named 'no_such_module_xyz'"),
        (["--import", "missing/file.py", "evaluate", "--help"], "--import missing/file.py: no such .py file"),
        (["fit", "--import"], "--import needs a module name or a .py file"),
        (["--import", "not a-name", "merge", "--help"], "expected a module name such as gru_lm"),
    ],
)
def test_a_bad_import_entry_is_named(args, expected, capsys, monkeypatch):
    monkeypatch.delenv("CFGRL_IMPORT", raising=False)
    assert main(args) == 2
    assert expected in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_bad_env_entry_names_the_variable(capsys, monkeypatch):
    monkeypatch.setenv("CFGRL_IMPORT", "json, no_such_module_xyz")
    assert main(["generate", "--help"]) == 2
    assert capsys.readouterr().err.startswith(
        "cfgrl: error: CFGRL_IMPORT no_such_module_xyz: no module named"
    )


def test_import_is_taken_out_wherever_it_stands():
    modules, rest = split_imports(["--import", "a", "fit", "--config", "c.yaml", "--import=b.c", "--x", "1"])
    assert modules == ["a", "b.c"] and rest == ["fit", "--config", "c.yaml", "--x", "1"]


def test_trust_covers_a_module_and_its_submodules_only(monkeypatch):
    monkeypatch.setattr(specs, "_TRUSTED_MODULES", set())
    specs.trust_modules(["mypkg"])
    assert specs._is_trusted("mypkg") and specs._is_trusted("mypkg.models.gru")
    assert not specs._is_trusted("mypkg_other") and not specs._is_trusted("os")
    assert not specs._is_trusted("mypkg.__main__")
    with pytest.raises(specs.UnsafeSpecError, match="pass `--import antigravity` to cfgrl"):
        specs.resolve_module_class("antigravity.Model", "a test spec")


@pytest.mark.parametrize("command", ["fit", "validate", "merge", "evaluate", "generate", "export"])
def test_every_command_accepts_import(command, monkeypatch, capsys):
    monkeypatch.setattr(specs, "_TRUSTED_MODULES", set())
    monkeypatch.delenv("CFGRL_IMPORT", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["--import", "json", command, "--help"])
    assert exit_.value.code == 0
    assert "json" in specs.trusted_modules()
    assert "--import MODULE" in (main(["--help"]) == 0 and capsys.readouterr().out)


def test_warnings_print_above_a_running_progress_bar_not_inside_it(capsys):
    import warnings

    from tqdm import tqdm

    from lightning_cfgrl.cli.main import warnings_above_progress_bars

    with warnings_above_progress_bars():
        bar = tqdm(total=4, file=sys.stderr, ascii=True, mininterval=0)
        bar.update(2)
        warnings.warn("the reward is dead", UserWarning, stacklevel=1)
        bar.update(1)
        bar.close()
    err = capsys.readouterr().err
    line = next(part for part in err.replace("\r", "\n").split("\n") if "the reward is dead" in part)
    assert "|" not in line and line.endswith("UserWarning: the reward is dead")
