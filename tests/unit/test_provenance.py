"""Provenance: environment() says where a result was computed, every done-marker carries it, and no stage hash
depends on it (a finished stage is skipped on any machine)."""
import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from pipelines.infra import bookkeeping, provenance
from pipelines.infra.bookkeeping import Stage, config_hash, run_stage
from pipelines.infra.provenance import environment, versions

OLD_VERSION_KEYS = {"python", "torch", "transformers", "trl", "datasets"}


def test_environment_has_its_keys_and_is_json():
    env = environment()
    assert {"platform", "machine", "cpu", "torch", "gpu", "versions"} <= set(env)
    assert {"model", "simd", "logical_cpus", "usable_cpus"} <= set(env["cpu"])
    assert {"version", "cuda", "mkldnn", "mkl", "onednn_version", "mkl_version", "cpu_capability", "num_threads",
            "num_interop_threads"} <= set(env["torch"])
    assert isinstance(env["cpu"]["model"], str) and env["cpu"]["model"]
    assert env["cpu"]["simd"] == sorted(env["cpu"]["simd"]) and set(env["cpu"]["simd"]) <= provenance.SIMD_FLAGS
    assert env["cpu"]["logical_cpus"] >= 1
    assert env["torch"]["version"] == torch.__version__
    assert isinstance(env["torch"]["mkldnn"], bool) and isinstance(env["torch"]["mkl"], bool)
    if torch.cuda.is_available():
        assert env["gpu"]["count"] == torch.cuda.device_count() == len(env["gpu"]["names"])
    else:
        assert env["gpu"] is None
    assert json.loads(json.dumps(env)) == env  # plain JSON, no default= needed


def test_environment_reads_the_cpu_flags_of_proc_cpuinfo():
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        pytest.skip("no /proc/cpuinfo")
    simd = set(environment()["cpu"]["simd"])
    assert simd == flags & provenance.SIMD_FLAGS


def test_environment_holds_no_hostname():
    import platform
    import socket

    env = json.dumps(environment())
    for name in {socket.gethostname(), platform.node()} - {""}:
        assert f'"{name}"' not in env
    assert '"hostname"' not in env and '"environ' not in env


def test_environment_reports_the_current_thread_count():
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            assert environment()["torch"]["num_threads"] == n
    finally:
        torch.set_num_threads(before)
    assert environment()["torch"]["num_interop_threads"] == torch.get_num_interop_threads()


def test_environment_is_a_fresh_copy_each_call():
    first = environment()
    first["cpu"]["simd"].append("tampered")
    first["versions"]["torch"] = "tampered"
    assert "tampered" not in environment()["cpu"]["simd"]
    assert environment()["versions"]["torch"] == torch.__version__


def test_versions_keep_their_keys_and_add_the_installed_libraries():
    v = versions()
    assert OLD_VERSION_KEYS <= set(v)
    for name in ("numpy", "tokenizers", "accelerate", "safetensors"):  # all installed with the project
        assert v[name]
    import numpy
    assert v["numpy"] == numpy.__version__
    v["torch"] = "tampered"
    assert versions()["torch"] == torch.__version__


# ------------------------------------------------------------------------------------------ done-marker and hash
def _tiny(tmp_path: Path):
    cfg = OmegaConf.create({"force": False, "threads": 1, "device": "cpu", "tiny": {"value": 3}})

    def run(cfg, out_dir):
        (out_dir / "out.txt").write_text(str(cfg.tiny.value))
        return {"value": cfg.tiny.value}

    stage = Stage("tiny", run, ("tiny",), (), lambda c: tmp_path / c.get("folder", "tiny"))
    return cfg, {"tiny": stage}


def _done(folder: Path) -> dict:
    return json.loads((folder / "done.json").read_text())


def test_done_marker_records_the_environment(tmp_path):
    cfg, stage_set = _tiny(tmp_path)
    run_stage(cfg, stage_set, "tiny")
    done = _done(tmp_path / "tiny")
    expected = environment()
    assert done["environment"]["cpu"] == expected["cpu"]
    assert done["environment"]["torch"]["version"] == torch.__version__
    assert done["environment"]["versions"] == done["versions"] == versions()  # "versions" kept for old readers
    assert done["metrics"] == {"value": 3}


def test_stage_hash_does_not_depend_on_the_environment(tmp_path, monkeypatch):
    cfg, stage_set = _tiny(tmp_path)
    first = run_stage(cfg, stage_set, "tiny")
    marker = (tmp_path / "tiny" / "done.json").read_text()
    _, payload = config_hash(cfg, stage_set["tiny"], {})
    assert "environment" not in json.dumps(payload) and "versions" not in json.dumps(payload)

    other = {"platform": "Other-OS", "machine": "arm64", "cpu": {"model": "another CPU", "simd": ["neon"]},
             "torch": {"version": "0.0", "num_threads": 64}, "gpu": {"count": 8, "names": ["X"] * 8},
             "versions": {"torch": "0.0"}}
    monkeypatch.setattr(bookkeeping, "environment", lambda: other)
    monkeypatch.setattr(provenance, "environment", lambda: other)
    # The finished stage is skipped on the "other machine": same hash, marker untouched.
    assert run_stage(cfg, stage_set, "tiny") == first
    assert (tmp_path / "tiny" / "done.json").read_text() == marker
    assert config_hash(cfg, stage_set["tiny"], {})[0] == first
    # Run afresh there, the stage gets the same hash and its marker records that machine.
    elsewhere = OmegaConf.merge(cfg, {"folder": "elsewhere"})
    assert run_stage(elsewhere, stage_set, "tiny") == first
    assert _done(tmp_path / "elsewhere")["environment"] == other
    assert _done(tmp_path / "elsewhere")["hash"] == first
