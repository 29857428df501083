"""A value of the wrong type on the command line is one line naming the key, before anything runs (not a traceback
from deep inside the checks)."""
import pytest

from pipelines.infra.io import UserError
from pipelines.run import check
from tests.helpers import compose_cfg


@pytest.mark.parametrize("overrides, message", [
    (["method.beta=abc"], "method.beta=abc must be a number (e.g. conf/method/"),
    (["method=ppo", "method.kl.target=x"], "method.kl.target=x must be a number"),
    (["method=ppo_gt", "method.learning_rate=fast"], "method.learning_rate=fast must be a number"),
])
def test_a_text_where_a_number_belongs_names_the_key(overrides, message):
    with pytest.raises(UserError, match="nothing was run") as err:
        check(compose_cfg(["experiment=sentiment_embedded", *overrides]))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("overrides, message", [
    (["task.pairs.n_prompts=many"], "task.pairs.n_prompts=many must be a number (e.g. conf/"),
    (["task.eval.n_prompts=[1,2]"], "task.eval.n_prompts=[1, 2] must be a number"),
    (["method.beta=[1,2]"], "method.beta=[1, 2] must be a number"),
    (["model.sft.epochs=one"], "model.sft.epochs=one must be a number"),
    (["judge.name=3"], "judge.name=3 must be text"),
])
def test_every_group_setting_is_typed_by_what_its_yaml_files_declare(overrides, message):
    with pytest.raises(UserError, match="nothing was run") as err:
        check(compose_cfg(["experiment=sentiment_embedded", *overrides]))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("override, key", [
    ("seed=abc", "seed"), ("threads=two", "threads"), ("judge_dry_run=maybe", "judge_dry_run"),
    ("shared_seed=x", "shared_seed"), ("pipeline=train", "pipeline"),
])
def test_the_top_level_keys_are_a_structured_config_hydra_checks_while_composing(override, key):
    from pipelines.sweep import compose_cfg as job_cfg

    with pytest.raises(UserError) as err:
        job_cfg(["experiment=sentiment_embedded", override])
    text = str(err.value)
    assert override.split("=")[1] in text and f"(key {key})" in text and "\n" not in text


def test_the_structured_top_leaves_every_value_its_type():
    cfg = compose_cfg(["experiment=sentiment_embedded", "seed=3"])
    assert cfg.seed == 3 and cfg.shared_seed == 3 and cfg.threads == 2 and cfg.judge_dry_run is False
    assert isinstance(cfg.vllm_gpu_memory_utilization, float) and cfg.wandb.mode == "offline"


@pytest.mark.parametrize("argv, refused", [
    (["-m", "method=dpo,ppo"], "method=dpo,ppo"),
    (["--multirun", "experiment=sentiment_embedded", "method=choice(dpo,ipo)"], "method=choice(dpo,ipo)"),
    (["-m", "method=ppo"], None),  # one method: its own preset grid
    # the text tasks' smoke presets give these methods no grid: one multirun runs them all
    (["-m", "experiment=summarization_smoke", "method=sft,dpo,preferred_ft,ppo,bon"], None),
    (["-m", "experiment=summarization_smoke", "method=dpo,unlikelihood"], "method=dpo,unlikelihood"),
    (["method=dpo,ppo"], None),  # not a multirun: Hydra itself refuses a list
    (["-m", "method.beta=0.1,1"], None),  # a grid of one method's key
])
def test_a_multirun_over_several_methods_is_refused_before_hydra_composes_it(argv, refused):
    from pipelines.run import several_methods

    assert several_methods(argv) == refused


def test_the_refusal_is_one_line_and_exit_code_2(capsys):
    from pipelines.run import refuse_several_methods

    with pytest.raises(SystemExit) as stop:
        refuse_several_methods(["-m", "method=dpo,ipo"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pipelines.sweep" in err and "--methods a b" in err


@pytest.mark.parametrize("method, one, other, tag", [
    ("dpo", "method.beta=1", "method.beta=1.0", "dpo_beta1.0"),
    ("ppo", "method.kl.target=8", "method.kl.target=8.0", "ppo_kl8"),
    ("unlikelihood", "method.alpha=1", "method.alpha=1.0", None),
])
def test_one_number_two_spellings_is_one_run(method, one, other, tag):
    from pipelines.infra.bookkeeping import plan_hash
    from pipelines.run import STAGES
    from pipelines.sweep import compose_cfg as job_cfg

    a = job_cfg(["experiment=sentiment_embedded", f"method={method}", one])
    b = job_cfg(["experiment=sentiment_embedded", f"method={method}", other])
    assert a.method.tag == b.method.tag and a.paths.method == b.paths.method
    assert plan_hash(a, STAGES, "evaluate") == plan_hash(b, STAGES, "evaluate")
    if tag:
        assert a.method.tag == tag


def test_listing_a_multirun_points_to_the_sweep_list(capsys):
    from pipelines.run import refuse_several_methods

    with pytest.raises(SystemExit) as stop:
        refuse_several_methods(["-m", "--cfg", "job"])
    assert stop.value.code == 2 and "pipelines.sweep" in capsys.readouterr().err


def test_a_judge_dry_run_trains_nothing(tmp_path, capsys):
    """A run not trained yet is not trained by a dry run: it says so and writes nothing."""
    from pipelines.run import run_pipeline

    cfg = compose_cfg(["experiment=smoke", "judge=openai", "judge_dry_run=true", f"paths.root={tmp_path / 'runs'}"])
    assert run_pipeline(cfg) == {}
    assert not (tmp_path / "runs").exists()
    assert "not counted, its stage(s)" in capsys.readouterr().out


def test_the_default_experiment_is_the_one_config_yaml_composes():
    from omegaconf import OmegaConf

    from pipelines.run import CONF, DEFAULT_EXPERIMENT

    defaults = OmegaConf.load(CONF / "config.yaml").defaults
    assert {"experiment": DEFAULT_EXPERIMENT} in [OmegaConf.to_container(d) if not isinstance(d, str) else d
                                                  for d in defaults]
