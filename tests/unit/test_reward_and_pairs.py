"""r*: saved without pickle, not bought by filler or length; pairs: ranking, ties."""
import pytest

from pipelines.tasks.gold_reward import TfidfLogReg, accuracy, features
from pipelines.tasks.sentiment import rank_pairs
from tests.helpers import review_rows


@pytest.fixture(scope="module")
def rstar():
    rows = review_rows(200)
    return TfidfLogReg.fit([r["text"] for r in rows], [r["label"] for r in rows], min_df=1, max_features=1000,
                           l2=1e-3, steps=100)


def test_classifier_learns_the_labels(rstar):
    held_out = [{"text": r["text"], "label": r["label"]} for r in review_rows(100, seed=9)]
    assert accuracy(rstar, held_out) > 0.9
    assert rstar(["a wonderful brilliant film"])[0] > 0.5 > rstar(["a dull tedious film"])[0]


def test_filler_and_length_buy_no_reward(rstar):
    text = "the city story was charming but dull"
    base = rstar([text])[0]
    assert rstar([text + " and and and the of and"])[0] == pytest.approx(base, abs=1e-6)
    # Repetition only adds the few bigrams that span the joins: the reward barely moves, however long.
    for k in (2, 5, 20):
        assert abs(rstar([" ".join([text] * k)])[0] - base) < 0.1
    assert "and" not in features("and and and")


def test_save_load_roundtrip_without_pickle(rstar, tmp_path):
    rstar.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors", "vocab.json"]
    texts = ["superb fun", "bad weak dull", "neutral words only"]
    assert TfidfLogReg.load(tmp_path)(texts) == pytest.approx(rstar(texts), abs=1e-7)


def test_all_pairs_ranked_and_ties_dropped():
    completions = [[1], [2], [3], [4]]
    pairs, ties = rank_pairs([9], completions, [0.1, 0.5, 0.5, 0.9], tie_threshold=0.0)
    assert ties == 1 and len(pairs) == 5
    assert all(p["chosen_reward"] > p["rejected_reward"] for p in pairs)
    assert {(tuple(p["chosen_ids"]), tuple(p["rejected_ids"])) for p in pairs} == {
        ((2,), (1,)), ((3,), (1,)), ((4,), (1,)), ((4,), (2,)), ((4,), (3,))}
    # identical completions are a tie even if scored differently
    assert rank_pairs([9], [[1], [1]], [0.2, 0.3], 0.0) == ([], 1)


def test_pairs_carry_the_reference_logps_of_their_own_completions():
    pairs, _ = rank_pairs([9], [[1], [2], [3]], [0.1, 0.9, 0.5], 0.0, ref_logps=[-1.0, -2.0, -3.0])
    by_ids = {(p["chosen_ids"][0], p["rejected_ids"][0]): (p["ref_chosen_logps"], p["ref_rejected_logps"])
              for p in pairs}
    assert by_ids == {(2, 1): (-2.0, -1.0), (3, 1): (-3.0, -1.0), (2, 3): (-2.0, -3.0)}
    assert "ref_chosen_logps" not in rank_pairs([9], [[1], [2]], [0.1, 0.9], 0.0)[0][0]
