"""The lengths of the prompt-response tasks (pipelines/tasks/prompt_response.py fit_lengths): prompts over the cap
left out by default; the HH paper preset's reference-code rule instead keeps every example, cutting the prompt to its
end, then the answers."""
from omegaconf import OmegaConf

from pipelines.tasks.prompt_response import answer_cap, fit_lengths
from tests.helpers import compose_cfg


def _cfg(truncation=None):
    return OmegaConf.create({"task": {"prompt": {"max_tokens": 6, "truncation": truncation},
                                      "generation": {"max_new_tokens": 3}}})


def test_without_truncation_long_prompts_are_left_out_and_answers_capped_at_max_new_tokens():
    cfg = _cfg()
    assert fit_lengths(cfg, list(range(6)), [[1, 2]]) == (list(range(6)), [[1, 2]])
    assert fit_lengths(cfg, list(range(7)), [[1, 2]]) is None
    assert answer_cap(cfg) == 3


def test_the_reference_rule_cuts_the_prompt_to_its_end_then_the_answers():
    cfg = _cfg({"max_length": 10, "max_prompt_length": 4})
    assert answer_cap(cfg) == 10
    # fits: untouched
    assert fit_lengths(cfg, list(range(6)), [[7] * 4, [8] * 2]) == (list(range(6)), [[7] * 4, [8] * 2])
    # 8 + 4 > 10: the prompt keeps its last 4 tokens; 4 + 4 fits, so the answers stay whole
    assert fit_lengths(cfg, list(range(8)), [[7] * 4, [8] * 2]) == ([4, 5, 6, 7], [[7] * 4, [8] * 2])
    # 4 + 9 > 10 still: the answers are cut to 10 - 4 = 6
    prompt, answers = fit_lengths(cfg, list(range(8)), [[7] * 9, [8] * 2])
    assert prompt == [4, 5, 6, 7] and answers == [[7] * 6, [8] * 2]


def test_a_truncation_that_leaves_no_room_is_refused():
    import pytest

    from pipelines.infra.io import UserError
    from pipelines.run import check

    for override, message in (("task.prompt.truncation.max_prompt_length=512", "max_prompt_length < max_length"),
                              ("task.generation.max_new_tokens=300", "must fit max_length")):
        with pytest.raises(UserError, match=message):
            check(compose_cfg(["experiment=dialogue_paper", "method=dpo", "wandb.mode=disabled", override]))


def test_only_the_hh_paper_preset_uses_the_reference_rule():
    assert compose_cfg(["experiment=dialogue_paper"]).task.prompt.truncation == {"max_length": 512,
                                                                                  "max_prompt_length": 256}
    for experiment in ("summarization_paper", "dialogue_embedded", "summarization_embedded"):
        assert not compose_cfg([f"experiment={experiment}"]).task.prompt.get("truncation"), experiment
