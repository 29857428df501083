"""What a user types besides the Hydra overrides: the console script (so Hydra's tab completion can be installed)
and `make help`, which lists the targets and every variable they read."""
import importlib
import subprocess

import tomllib

from tests.helpers import ROOT


def test_the_console_script_is_the_run_entry_with_its_multirun_guard():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, name = scripts["rvd-run"].partition(":")
    entry = getattr(importlib.import_module(module), name)
    from pipelines import run

    assert entry is run.cli and "refuse_several_methods" in run.cli.__code__.co_names


def test_make_help_lists_the_variables_with_their_defaults():
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for name in ("SEEDS", "METHODS", "JOBS", "ACCELERATE", "ARGS", "HEADLINE_SEEDS", "OTHER_SEEDS", "TUNING_METHODS",
                 "RVD_RUNS", "RVD_CACHE"):
        assert f"\n  {name} " in out, name
    assert "make reproduce-sentiment " in out and "(default 0)" in out


def _venv_recipe(tmp_path, curl_exit: int, nvidia: bool) -> str:
    """The commands `make` would run to create a venv, with stand-ins for curl (does PyTorch's CPU index answer?)
    and nvidia-smi (is there a driver?)."""
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "curl").write_text(f"#!/bin/sh\nexit {curl_exit}\n")
    (bin_dir / "curl").chmod(0o755)
    smi = bin_dir / "nvidia-smi"
    if nvidia:
        smi.write_text("#!/bin/sh\nexit 0\n")
        smi.chmod(0o755)
    elif smi.exists():
        smi.unlink()
    env = {**os.environ, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    venv = tmp_path / "venv"
    return subprocess.run(["make", "-n", "-B", f"{venv}/.installed", f"VENV={venv}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True).stdout


def test_torch_comes_from_the_cpu_index_without_a_driver_where_that_index_answers(tmp_path):
    torch_line = next(line for line in _venv_recipe(tmp_path, 0, False).splitlines() if '"torch' in line)
    assert '"torch==2.13.0"' in torch_line and "--extra-index-url https://download.pytorch.org/whl/cpu" in torch_line
    # only PyPI reachable (this project's CI): PyPI
    torch_line = next(line for line in _venv_recipe(tmp_path, 7, False).splitlines() if '"torch' in line)
    assert "--extra-index-url" not in torch_line
    # a driver answers: the CUDA build from PyPI
    torch_line = next(line for line in _venv_recipe(tmp_path, 0, True).splitlines() if '"torch' in line)
    assert '"torch"' in torch_line and "--extra-index-url" not in torch_line


def test_rvd_runs_and_rvd_cache_move_every_folder(monkeypatch, tmp_path):
    from tests.helpers import compose_cfg

    monkeypatch.setenv("RVD_RUNS", str(tmp_path / "scratch"))
    monkeypatch.setenv("RVD_CACHE", str(tmp_path / "cache"))
    cfg = compose_cfg(["experiment=sentiment_embedded", "judge=local_smollm2"])
    for key in ("run_root", "shared", "pipeline", "sft", "pairs", "reward_model", "method", "judge_cache"):
        assert str(cfg.paths[key]).startswith(str(tmp_path / "scratch")), key
    assert cfg.paths.cache == str(tmp_path / "cache") and cfg.judge.path.startswith(str(tmp_path / "cache"))
