"""Tuning trials (a sweep group with `trials`): their run folders are their own (never on a frontier), each trial is
scored on validation prefixes only (best validation r* within each KL budget, SFT included), validation's pick is
marked, and the summary says plainly when it is not the preset's setting the headline runs use."""
import json

import numpy as np
import pytest

from analysis import tuning
from analysis.load import load_points
from pipelines import sweep
from pipelines.infra.io import UserError


def _run(root, where, method, lr, points, target=None):
    """A finished run folder: its method config and its evaluated checkpoints [(val_kl, val_r, test_kl, test_r)]."""
    d = root / where
    (d / "eval").mkdir(parents=True)
    cfg = {"name": method, "learning_rate": lr, "beta": 0.2 if method == "dpo" else None}
    if target is not None:
        cfg["kl"] = {"target": target}
    (d / "stage_config.json").write_text(json.dumps({"config": {"method": cfg}}))
    for i, (vkl, vr, kl, r) in enumerate(points):
        (d / "eval" / f"step{i:06d}.json").write_text(json.dumps(
            {"method": method, "param": 0.2, "seed": 0, "shared_seed": 0, "step": i, "kl": kl, "reward": r,
             "val_kl": vkl, "val_reward": vr, "tag": d.name}))
    (d / "eval" / "done.json").write_text("{}")


@pytest.fixture
def root(tmp_path):
    _run(tmp_path, "shared/sft", "sft", None, [(0.0, 0.45, 0.0, 0.47)])
    _run(tmp_path, "seed0/dpo_beta0.2", "dpo", 1e-4, [(0.5, 0.55, 0.5, 0.56), (1.5, 0.60, 1.5, 0.61)])
    _run(tmp_path, "seed0/ppo_kl8", "ppo", 1e-4, [(1.2, 0.58, 1.2, 0.59)], target=8)
    # DPO: the preset's rate repeated; x3 better on validation (but worse on test: test never chooses)
    _run(tmp_path, "tuning/seed0/dpo_beta0.2_learning_rate0.0001", "dpo", 1e-4,
         [(0.5, 0.55, 0.5, 0.56), (1.5, 0.60, 1.5, 0.61)])
    _run(tmp_path, "tuning/seed0/dpo_beta0.2_learning_rate0.0003", "dpo", 3e-4,
         [(0.8, 0.62, 0.8, 0.40), (3.0, 0.70, 3.0, 0.41)])
    # PPO: the preset's rate wins
    _run(tmp_path, "tuning/seed0/ppo_kl8_learning_rate0.0001", "ppo", 1e-4, [(0.9, 0.57, 0.9, 0.5)], target=8)
    _run(tmp_path, "tuning/seed0/ppo_kl8_learning_rate3e-05", "ppo", 3e-5, [(0.3, 0.50, 0.3, 0.5)], target=8)
    return tmp_path


def test_score_is_the_best_validation_reward_within_each_budget():
    pts = [(0.0, 0.45), (0.5, 0.55), (1.5, 0.60), (3.5, 0.58)]
    np.testing.assert_allclose(tuning.score(pts, (1, 2, 4)), [0.55, 0.60, 0.60])
    assert np.isnan(tuning.score([(2.5, 0.7)], (1, 4))[0])


def test_trials_are_scored_on_validation_and_the_pick_is_said(root, tmp_path):
    t = tuning.table(root).set_index("tag")
    assert len(t) == 4  # the headline runs are not trials
    dpo_fast = t.loc["dpo_beta0.2_learning_rate0.0003"]
    assert dpo_fast.chosen and not dpo_fast.preset
    np.testing.assert_allclose([dpo_fast.val_r_kl1, dpo_fast.val_r_kl2, dpo_fast.val_r_kl4], [0.62, 0.62, 0.70])
    assert t.loc["ppo_kl8_learning_rate0.0001"].chosen and t.loc["ppo_kl8_learning_rate0.0001"].preset
    # the SFT point is the floor where a trial has nothing within a budget
    assert t.loc["ppo_kl8_learning_rate3e-05"].val_r_kl1 == pytest.approx(0.50)
    text = "\n".join(tuning.write(tuning.table(root), tmp_path))
    assert "validation picks learning rate 0.0003, +0.063" in text and "not the tuned one" in text
    assert "PPO: 2 trials; validation picks the preset's learning rate 0.0001" in text
    assert (tmp_path / "tuning.csv").exists()
    # the DPO trial at the preset's rate has the headline run's points, the PPO one (made different here) not
    assert "in 1 of 2 case(s)" in text


def test_tuning_runs_never_enter_the_frontier(root):
    df = load_points(root)
    assert not df.source.str.startswith("tuning/").any() and len(df[df.method == "dpo"]) == 2


def test_trial_grid_runs_each_setting_in_its_own_folder():
    settings = sweep.trial_grid("sentiment_embedded", "ppo",
                                {"method.kl.target": "8", "method.learning_rate": "3.0e-5,1.0e-4"}, "tuning", [])
    assert len(settings) == 2
    cfg = sweep.compose_cfg(["experiment=sentiment_embedded", "method=ppo", "seed=3", *settings[0]])
    assert cfg.method.tag == "ppo_kl8_learning_rate3e-05" and cfg.method.learning_rate == 3e-5
    assert cfg.paths.method.endswith("sentiment/embedded/tuning/seed3/ppo_kl8_learning_rate3e-05")
    # the headline run of the same setting keeps its folder and its tag
    plain = sweep.compose_cfg(["experiment=sentiment_embedded", "method=ppo", "seed=3", "method.kl.target=8"])
    assert plain.paths.method.endswith("seed3/ppo_kl8")


def test_the_committed_tuning_group_gives_each_compared_method_the_same_number_of_trials():
    spec = {"groups": {"tuning": dict(sweep.OmegaConf.load(sweep.CONF / "experiment" / "sentiment_embedded.yaml")
                                      .sweep.groups.tuning)}}
    group = sweep.groups_of(spec, [])["tuning"]
    counts = {m: len(sweep.trial_grid("sentiment_embedded", m, group["trials"][m], group["folder"], []))
              for m in group["methods"]}
    assert set(counts) == {"dpo", "ppo"} and len(set(counts.values())) == 1 and counts["dpo"] >= 3


def test_trials_without_a_folder_are_refused():
    with pytest.raises(UserError, match="trials need a folder"):
        sweep.groups_of({"groups": {"t": {"methods": ["dpo"], "trials": {"dpo": {"method.beta": "0.1"}}}}}, [])
