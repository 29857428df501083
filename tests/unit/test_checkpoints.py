"""A run killed while the Trainer was writing a checkpoint resumes from the last complete one instead of failing on
the torn folder (the Trainer writes trainer_state.json last)."""
import logging

from pipelines.infra.tracking import TRAINER_STATE, latest_checkpoint


def _checkpoint(root, step, complete=True):
    folder = root / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    if complete:
        (folder / TRAINER_STATE).write_text("{}")
    return folder


def test_a_torn_newest_checkpoint_is_skipped_with_a_warning(tmp_path, caplog):
    _checkpoint(tmp_path, 500)
    good = _checkpoint(tmp_path, 1000)
    _checkpoint(tmp_path, 1500, complete=False)  # killed mid-write
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(tmp_path) == str(good)
    assert "checkpoint-1500 was cut off" in caplog.text and "resuming from checkpoint-1000" in caplog.text


def test_numeric_order_and_no_complete_checkpoint(tmp_path, caplog):
    assert latest_checkpoint(tmp_path) is None
    _checkpoint(tmp_path, 90)
    newest = _checkpoint(tmp_path, 100)  # 100 sorts after 90 by step, not by text
    assert latest_checkpoint(tmp_path) == str(newest)
    other = tmp_path / "other"
    _checkpoint(other, 10, complete=False)
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(other) is None
    assert "resuming from the start" in caplog.text
