"""Fronts chosen on validation and read on test, matched-KL tables across full-pipeline seeds, the paired verdict and
the written summary, on small hand-made tables whose numbers are worked out in the comments."""
import json
import math

import numpy as np
import pandas as pd
import pytest

from analysis.frontier import interpolate_front, main, plot_frontier, plot_runs, reading, seed_table, verdict

COLS = ["method", "param", "seed", "shared_seed", "step", "kl", "reward", "reward_se", "val_kl", "val_reward"]


def rows(*points):
    """(method, param, seed, step, kl, reward[, val_kl, val_reward]); validation = test unless given; each seed on
    its own pipeline seed (shared_seed = seed)."""
    out = []
    for p in points:
        method, param, seed, step, kl, reward = p[:6]
        val_kl, val_reward = p[6:8] if len(p) > 6 else (kl, reward)
        out.append((method, param, seed, seed, step, kl, reward, 0.01, val_kl, val_reward))
    return pd.DataFrame(out, columns=COLS)


def test_front_is_chosen_on_validation_and_read_on_test():
    # Step 20 looks best on test (.90 at KL 3) but is dominated on validation by step 10 (val .70 at KL 2 vs .60 at
    # KL 3): it is not on the front, so the front ends at step 10's test point (2, .60).
    pts = rows(("sft", None, 0, 0, 0.0, 0.50), ("dpo", 0.1, 0, 5, 1.0, 0.55),
               ("dpo", 0.1, 0, 10, 2.0, 0.60, 2.0, 0.70), ("dpo", 0.1, 0, 20, 3.0, 0.90, 3.0, 0.60))
    r = interpolate_front(pts, [0.5, 1.0, 1.5, 2.0, 2.5])
    # below the first own checkpoint (KL 1): no chord from SFT; 1.5 halfway between (1, .55) and (2, .60); between
    # the last front point (KL 2) and the seed's reach (step 20 went to KL 3): the best policy within the budget
    assert np.isnan(r[0]) and r[1] == pytest.approx(0.55) and r[2] == pytest.approx(0.575)
    assert r[3] == pytest.approx(0.60) and r[4] == pytest.approx(0.60)
    assert np.isnan(interpolate_front(pts, [3.5])[0])  # beyond the reach: never extrapolated


def test_a_front_reads_its_best_policy_within_the_budget_up_to_the_seed_reach():
    # (10, .40) is off the front (lower than (2, .60)) but the seed's training went to KL 10: within KL <= 5 its best
    # policy is (2, .60); beyond KL 10 nothing is read
    pts = rows(("sft", None, 0, 0, 0.0, 0.50), ("dpo", 0.1, 0, 10, 1.0, 0.55), ("dpo", 0.1, 0, 20, 2.0, 0.60),
               ("dpo", 0.1, 0, 30, 10.0, 0.40))
    assert interpolate_front(pts, [5.0])[0] == pytest.approx(0.60)
    assert np.isnan(interpolate_front(pts, [10.5])[0])


def ten_seeds(dpo_shift: float, ppo_first_kl: float = 0.8, noise: float = 0.02, seed: int = 0) -> pd.DataFrame:
    """Ten full-pipeline seeds: each seed's SFT r* differs (a pipeline effect shared by its DPO and PPO), DPO and
    PPO fronts (KL 0.8 and 4 for DPO; ppo_first_kl and 4 for PPO) sit on it, DPO `dpo_shift` above PPO."""
    rng = np.random.default_rng(seed)
    pts = []
    for s in range(10):
        base = 0.45 + 0.05 * rng.standard_normal()  # the seed's SFT: large spread, shared by both methods
        pts += [("sft", None, s, 0, 0.0, base),
                ("dpo", 0.1, s, 10, 0.8, base + 0.10 + dpo_shift + noise * rng.standard_normal()),
                ("dpo", 0.1, s, 20, 4.0, base + 0.20 + dpo_shift + noise * rng.standard_normal()),
                ("ppo", 4.0, s, 10, ppo_first_kl, base + 0.10 + noise * rng.standard_normal()),
                ("ppo", 4.0, s, 20, 4.0, base + 0.20 + noise * rng.standard_normal())]
    return rows(*pts)


def test_seed_table_reads_each_seed_against_its_own_pipeline():
    df = ten_seeds(0.05)
    t = seed_table(df, budgets=(0.5, 1, 4)).set_index(["method", "kl"])
    # KL 0.5 is below every seed's first checkpoint (0.8): no seed has a measurement there
    assert t.loc[("dpo", 0.5)].n_seeds == 0 and t.loc[("dpo", 1)].n_seeds == 10
    assert t.loc[("dpo", 4)].seeds == 10 and t.loc[("dpo", 4)].all_from_kl == pytest.approx(0.8)
    # the across-seed sd carries the pipeline spread (sd 0.05 of the SFT r*), which pairing removes
    assert t.loc[("dpo", 4)].sd > 0.03


def test_verdict_paired_test_finds_a_difference_the_seed_spread_would_hide():
    df = ten_seeds(0.05)
    sentence, results = verdict(df, budgets=(1, 2, 4))
    r = results["ppo"]
    assert r["relation"] == "dominates" and list(r["compared"].budget) == [1.0, 2.0, 4.0]
    assert (r["compared"].sign == "higher").all()
    assert r["stability"]["stability"] > 0.95
    # the minimum detectable difference of 10 paired seeds is far below the pipeline sd (0.05)
    assert (r["compared"].mdd < 0.04).all()
    assert "dominates PPO's" in sentence and "Holm" in sentence and "10 full-pipeline seeds" in sentence


def test_verdict_leaves_out_a_budget_below_a_rivals_first_checkpoint():
    df = ten_seeds(0.05, ppo_first_kl=1.5)
    _, results = verdict(df, budgets=(1, 2, 4))
    r = results["ppo"]
    assert list(r["compared"].budget) == [2.0, 4.0]
    assert [x["budget"] for x in r["left_out"]] == [1.0] and "at or below KL 1" in r["left_out"][0]["reason"]


def test_verdict_undecided_when_no_budget_differs():
    df = ten_seeds(0.0, noise=0.03, seed=3)
    sentence, results = verdict(df, budgets=(1, 4))
    assert results["ppo"]["relation"] == "not distinguishable"
    assert "is undecided at this scale" in sentence


def test_verdict_without_dpo_or_rivals():
    df = ten_seeds(0.05)
    assert verdict(df[df.method != "dpo"])[0] == "No verdict can be given: DPO has no evaluated runs."
    assert verdict(df[df.method != "ppo"])[0].startswith("No verdict can be given: neither PPO nor PPO-GT")


def test_reading_flags_completions_that_collapsed_in_length():
    df = ten_seeds(0.05)
    df["mean_length"], df["eos_rate"] = 40.0, 0.1
    short = rows(("ppo_gt", 4.0, 0, 20, 5.0, 0.52)).assign(mean_length=8.0, eos_rate=1.0)
    text = "\n".join(reading(pd.concat([df, short], ignore_index=True)))
    assert ("final mean completion length 8.0-8.0 tokens (SFT 40.0), EOS rate 1.00-1.00 — **completions collapsed"
            in text)
    assert text.count("collapsed") == 1
    assert "## Verdict" in text and "**DPO vs PPO** (10 paired seeds" in text


def test_a_seed_missing_settings_is_left_out_of_the_seed_statistics():
    # seed 1 has only beta 0.1 of DPO's two settings (still training): its front would be a different frontier
    df = rows(("sft", None, 0, 0, 0.0, 0.50), ("sft", None, 1, 0, 0.0, 0.50),
              ("dpo", 0.1, 0, 10, 2.0, 0.60), ("dpo", 1.0, 0, 10, 1.0, 0.58), ("dpo", 0.1, 1, 10, 2.0, 0.90))
    t = seed_table(df, budgets=(1, 2)).set_index(["method", "kl"])
    assert t.loc[("dpo", 2)].n_seeds == 1 and t.loc[("dpo", 2)]["mean"] == pytest.approx(0.60)
    text = "\n".join(reading(df))
    assert "Left out of the seed statistics (not every setting evaluated yet): DPO seed 1." in text


def write_runs(root, df):
    """Points as the pipelines write them: SFT of pipeline seed 0 in shared/sft, of seed k in pipeline<k>/sft;
    method runs in seed<k>/<tag>; samples for SFT 0 and DPO seed 0."""
    for r in df.itertuples(index=False):
        where = (("shared" if r.seed == 0 else f"pipeline{r.seed}") + "/sft" if r.method == "sft"
                 else f"seed{r.seed}/{r.method}_{r.param}")
        d = {"method": r.method, "param": None if pd.isna(r.param) else float(r.param), "seed": int(r.seed),
             "shared_seed": int(r.shared_seed), "step": int(r.step), "kl": float(r.kl), "kl_se": 0.05,
             "reward": float(r.reward), "reward_se": 0.01, "n": 100, "val_kl": float(r.val_kl),
             "val_reward": float(r.val_reward), "mean_length": 40.0, "eos_rate": 0.2, "tag": where.split("/")[1]}
        path = root / where / "eval" / f"step{int(r.step):06d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(d))
        (path.parent / "done.json").write_text("{}")  # a finished evaluation (the analysis reads only those)
        if r.seed == 0 and r.method in ("sft", "dpo"):
            path.with_suffix(".samples.jsonl").write_text(
                json.dumps({"prompt": "a film", "completion": f"{r.method} step {r.step}", "reward": r.reward}) + "\n")
    (root / "shared" / "reward_model").mkdir(parents=True, exist_ok=True)
    (root / "shared" / "reward_model" / "done.json").write_text(json.dumps({"metrics": {
        "eval_accuracy": 0.7, "eval_accuracy_ci95": [0.65, 0.75], "n_eval_pairs": 600, "n_train_pairs": 9000}}))


def test_main_writes_csv_plots_and_summary_for_full_pipeline_seeds(tmp_path):
    df = ten_seeds(0.05)
    write_runs(tmp_path / "runs" / "sentiment" / "t", df)
    main(["--runs", str(tmp_path / "runs"), "--preset", "t", "--out", str(tmp_path / "out"), "--command", "pytest"])
    out = tmp_path / "out" / "sentiment" / "t"
    csv = pd.read_csv(out / "frontier.csv")
    assert {"shared_seed", "val_kl", "val_reward"} <= set(csv.columns)
    assert sorted(csv[csv.method == "sft"].shared_seed) == list(range(10))
    for png in ("frontier.png", "frontier_runs.png"):
        assert (out / png).stat().st_size > 10_000
    summary = (out / "summary.md").read_text()
    assert "## Verdict\n\nAt this scale DPO's frontier dominates PPO's" in summary
    assert "| KL | seeds | DPO | PPO | DPO − PPO [95 % CI] | p | p (Holm) | min. detectable difference | result |" \
        in summary
    assert "## Reproducibility" in summary and "| 0 |" in summary
    assert "pairwise accuracy 0.7 [95 % 0.65, 0.75] on 600 pairs of test prefixes" in summary
    assert "| dpo step 20 (step 20, seed 0)" not in summary and "DPO β=0.1 (step 20, seed 0)" in summary
    assert {"param_name", "git_sha"} <= set(csv.columns) and set(csv[csv.method == "dpo"].param_name) == {"β"}
    # results.json: everything a paper cites, in one file
    record = json.loads((out / "results.json").read_text())
    assert {"verdict", "comparisons", "matched_kl", "seeds", "stage_git_shas", "environments", "stage_configs",
            "winrates", "cost"} <= set(record)
    assert record["seeds"]["dpo"] == list(range(10)) and record["command"] == "pytest"


def test_plots_are_written_with_best_of_n_and_several_seeds(tmp_path):
    df = ten_seeds(0.05)
    df["kl_se"], df["kl_kind"] = 0.05, "estimated"
    bon = rows(*[("bon", n, s, n, math.log(n) - (n - 1) / n, 0.55 + 0.05 * n + 0.01 * s)
                 for n in (2, 4, 16) for s in (0, 1, 2)]).assign(kl_se=0.0, kl_kind="analytic")
    df = pd.concat([df, bon], ignore_index=True)
    plot_frontier(df, tmp_path / "front.png", "test")
    plot_runs(df, tmp_path / "runs.png", "test")
    assert (tmp_path / "front.png").stat().st_size > 10_000 and (tmp_path / "runs.png").stat().st_size > 10_000


def test_results_json_carries_the_verdict_and_every_test(tmp_path):
    import json

    from analysis.frontier import results_json

    df = ten_seeds(0.05)
    out = results_json(df, "sentiment", "embedded", "make reproduce-sentiment-seeds")
    text = json.dumps(out)  # plain JSON: no numpy types, NaN as null
    assert "NaN" not in text and out["command"] == "make reproduce-sentiment-seeds"
    # only PPO is present: DPO dominates it, which is all the claim asks of the rivals present
    assert out["claim"] == "holds" and list(out["comparisons"]) == ["dpo_vs_ppo"]
    c = out["comparisons"]["dpo_vs_ppo"]
    assert c["relation"] == "dominates" and c["n_seeds"] == 10 and c["stability"]["stability"] > 0.95
    # 0.5 is below every seed's first checkpoint (0.8), 8 beyond every seed's reach (4): left out, with reasons
    assert [b["budget"] for b in c["budgets"]] == [1.0, 2.0, 4.0]
    assert [x["budget"] for x in c["left_out"]] == [0.5, 8.0] and all(x["reason"] for x in c["left_out"])
    assert all({"mean_diff", "ci_low", "ci_high", "p_holm", "mdd", "sign"} <= set(b) for b in c["budgets"])
    assert {r["method"] for r in out["matched_kl"]} == {"dpo", "ppo"}
