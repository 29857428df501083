"""The frontier's snapshots under each kind of launch: whole weights in every process (one process, DDP) are saved
by the main process; sharded weights (FSDP, ZeRO-3) are gathered through the Trainer, which every process calls."""
from types import SimpleNamespace

from pipelines.lm.trainer import SnapshotPolicy


def _callback(tmp_path, saved):
    cb = SnapshotPolicy(tmp_path / "snapshots", every=10, tokenizer=None)
    cb.trainer = SimpleNamespace(save_model=lambda path: saved.append(("gathered", path)))
    model = SimpleNamespace(save_pretrained=lambda path, safe_serialization: saved.append(("main", path)))
    return cb, model


def _state(step, main):
    return SimpleNamespace(global_step=step, is_world_process_zero=main)


def test_whole_weights_are_saved_by_the_main_process_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED", raising=False)
    saved = []
    cb, model = _callback(tmp_path, saved)
    for main in (True, False):  # DDP: rank 0 and rank 1 at the same step
        cb.on_step_end(None, _state(20, main), None, model=model)
    cb.on_step_end(None, _state(21, True), None, model=model)  # not a snapshot step
    assert saved == [("main", str(tmp_path / "snapshots" / "step000020"))]


def test_sharded_weights_are_gathered_in_every_process(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    saved = []
    cb, model = _callback(tmp_path, saved)
    for main in (True, False):
        cb.on_step_end(None, _state(10, main), None, model=model)
    target = str(tmp_path / "snapshots" / "step000010")
    assert saved == [("gathered", target), ("gathered", target)]


def test_last_step_and_resumed_snapshots(tmp_path, monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    saved = []
    cb, model = _callback(tmp_path, saved)
    cb.on_train_end(None, _state(21, True), None, model=model)  # 1 step after a snapshot: a near-duplicate, skipped
    cb.on_train_end(None, _state(23, False), None, model=model)  # 3 steps after: saved
    assert saved == [("gathered", str(tmp_path / "snapshots" / "step000023"))]
    done = tmp_path / "snapshots" / "step000030"
    done.mkdir(parents=True)
    (done / "model.safetensors").write_bytes(b"")  # saved before a resume: every process skips it
    cb.on_step_end(None, _state(30, True), None, model=model)
    assert len(saved) == 1


def test_snapshots_delete_frees_the_run_after_its_evaluation_and_a_rerun_keeps_the_points(tmp_path, monkeypatch):
    import json

    from pipelines.stages import evaluate
    from tests.helpers import compose_cfg

    cfg = compose_cfg(["experiment=sentiment_paper", f"paths.root={tmp_path}"])
    assert cfg.snapshots == "delete" and compose_cfg(["experiment=sentiment_embedded"]).snapshots == "keep"
    run = tmp_path / "run"
    cfg.paths.method = str(run)
    for folder in ("snapshots/step000010", "snapshots/step000020", "trainer/checkpoint-20", "last", "policy"):
        (run / folder).mkdir(parents=True)
        (run / folder / "model.safetensors").write_bytes(b"w")
    out = tmp_path / "eval"
    out.mkdir()

    def fake_points(cfg, out_dir, policies, meta, seed):  # what evaluate_points writes for each policy
        for step, _ in policies:
            (out_dir / f"step{step:06d}.json").write_text(json.dumps({"step": step}))
            (out_dir / f"step{step:06d}.samples.jsonl").write_text("{}\n")
        return {"points": {step: f"step{step:06d}.json" for step, _ in policies}}

    monkeypatch.setattr(evaluate, "evaluate_points", fake_points)
    first = evaluate.run(cfg, out)
    assert first["points"] == {10: "step000010.json", 20: "step000020.json"}
    assert sorted(p.name for p in run.iterdir()) == ["policy", "trainer"] and not list((run / "trainer").iterdir())
    assert evaluate.run(cfg, out) == first  # nothing left to evaluate, the points stay
