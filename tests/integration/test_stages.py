"""Stage bookkeeping through run_pipeline: skip when done, resume when interrupted, refuse to overwrite, and bad
input stops before any training with earlier results untouched."""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipelines.infra.io import UserError
from pipelines.run import run_pipeline
from pipelines.stages import sft as sft_stage
from tests.helpers import write_reviews

SHARED = ["data", "tokenizer", "sft"]


def done(path):
    return json.loads((path / "done.json").read_text())


def test_done_stages_are_skipped_and_changed_config_is_refused(smoke_cfg):
    cfg = smoke_cfg(f"pipeline={SHARED}")
    first = run_pipeline(cfg)
    sft_dir = cfg.paths.sft
    marker = (Path(sft_dir) / "done.json").read_text()
    assert run_pipeline(cfg) == first  # every stage skipped: same hashes, marker untouched
    assert (Path(sft_dir) / "done.json").read_text() == marker
    assert done(Path(sft_dir))["wall_time_s"] >= 0
    with pytest.raises(UserError, match="finished with a different config"):
        run_pipeline(smoke_cfg(f"pipeline={SHARED}", "model.sft.learning_rate=0.01"))
    assert (Path(sft_dir) / "done.json").read_text() == marker


def test_interrupted_sft_resumes_to_the_same_weights(smoke_cfg, tmp_path, monkeypatch):

    reference = smoke_cfg(f"pipeline={SHARED}", f"paths.root={tmp_path / 'uninterrupted'}")
    run_pipeline(reference)
    expected = load_file(str(Path(reference.paths.sft) / "policy" / "model.safetensors"))

    cfg = smoke_cfg(f"pipeline={SHARED}")
    original = sft_stage.JsonlMetrics.on_log

    def crash_after_checkpoint(self, args, state, control, logs=None, **kw):
        original(self, args, state, control, logs=logs, **kw)
        if state.global_step >= 6:
            raise KeyboardInterrupt("simulated interruption")
    monkeypatch.setattr(sft_stage.JsonlMetrics, "on_log", crash_after_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(cfg)
    sft_dir = Path(cfg.paths.sft)
    assert not (sft_dir / "done.json").exists() and list((sft_dir / "checkpoints").glob("checkpoint-5"))
    monkeypatch.setattr(sft_stage.JsonlMetrics, "on_log", original)
    run_pipeline(cfg)
    assert done(sft_dir)["resumed"] is True
    resumed = load_file(str(sft_dir / "policy" / "model.safetensors"))
    for name, tensor in expected.items():
        assert torch.allclose(tensor, resumed[name], atol=1e-5), name


def test_bad_data_stops_before_training_and_keeps_earlier_results(smoke_cfg, reviews_file):

    cfg = smoke_cfg("pipeline=[data]")
    run_pipeline(cfg)
    data_dir = Path(cfg.paths.data)
    before = {p.name: p.read_bytes() for p in data_dir.iterdir()}
    reviews_file.write_text('{"text": "fine", "label": 1}\n{"text": "", "label": 0}\n')
    for extra in ([], ["force=true"]):
        with pytest.raises(UserError):
            run_pipeline(smoke_cfg(*extra))
        assert {p.name: p.read_bytes() for p in data_dir.iterdir()} == before
    assert not Path(cfg.paths.sft).exists()


def test_bad_config_writes_nothing(smoke_cfg, tmp_path):
    with pytest.raises(UserError, match="method.beta must be > 0"):
        run_pipeline(smoke_cfg("method.beta=0"))
    assert not (tmp_path / "runs").exists()


def test_pairs_resume_from_finished_chunks(smoke_cfg):

    cfg = smoke_cfg("pipeline=[data,tokenizer,sft,reward,pairs]")
    run_pipeline(cfg)
    pairs_dir = Path(cfg.paths.pairs)
    full = (pairs_dir / "pairs.jsonl").read_text()
    chunks = sorted((pairs_dir / "chunks").glob("*.jsonl"))
    assert len(chunks) == 2
    # Interrupted after the first chunk: the marker and the second chunk are missing.
    (pairs_dir / "done.json").unlink()
    chunks[1].unlink()
    (pairs_dir / "pairs.jsonl").unlink()
    run_pipeline(cfg)
    assert (pairs_dir / "pairs.jsonl").read_text() == full
    assert done(pairs_dir)["resumed"] is True


def test_local_file_content_is_part_of_the_data_hash(smoke_cfg, reviews_file):
    cfg = smoke_cfg("pipeline=[data]")
    first = run_pipeline(cfg)["data"]
    write_reviews(reviews_file, [{"text": "another review entirely .", "label": i % 2} for i in range(40)])
    with pytest.raises(UserError, match="different config"):
        run_pipeline(cfg)
    assert run_pipeline(smoke_cfg("pipeline=[data]", "force=true"))["data"] != first


def test_wandb_offline_run_per_training_stage_and_no_secret_written(smoke_cfg, tmp_path, monkeypatch):
    secret = "sk-this-must-never-be-written-0123456789"
    monkeypatch.setenv("WANDB_API_KEY", secret)
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = smoke_cfg("wandb.mode=offline")
    run_pipeline(cfg)
    for stage_dir in (Path(cfg.paths.sft), Path(cfg.paths.method)):
        runs = list((stage_dir / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, stage_dir
        assert (stage_dir / "metrics.jsonl").stat().st_size > 0
    for path in (tmp_path / "runs").rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_interrupted_stage_under_another_config_starts_afresh(smoke_cfg):
    cfg = smoke_cfg("pipeline=[data,tokenizer,sft,reward,pairs]")
    run_pipeline(cfg)
    pairs_dir = Path(cfg.paths.pairs)
    (pairs_dir / "done.json").unlink()  # interrupted...
    stale = pairs_dir / "chunks" / "00000.jsonl"
    stale.write_text('{"stale": true}\n')
    changed = smoke_cfg("pipeline=[data,tokenizer,sft,reward,pairs]", "task.pairs.tie_threshold=0.01")
    run_pipeline(changed)  # ...then rerun with another config: the stale chunk must not be reused
    assert "stale" not in stale.read_text()
    assert done(pairs_dir)["resumed"] is False
