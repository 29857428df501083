"""Every task x model x method x experiment composes, resolves and passes validation; bad values are refused."""
import itertools
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from pipelines.common import UserError
from pipelines.validate import validate
from tests.conftest import CONF, compose_cfg


def group(name: str) -> list[str]:
    return sorted(p.stem for p in (CONF / name).glob("*.yaml"))


@pytest.mark.parametrize("task,model,method,experiment", list(itertools.product(
    group("task"), group("model"), group("method"), group("experiment"))))
def test_every_combination_composes(task, model, method, experiment):
    cfg = compose_cfg([f"experiment={experiment}", f"task={task}", f"model={model}", f"method={method}"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # no dangling interpolation or ???
    validate(cfg)
    assert Path(cfg.paths.method).parts[-3:] == (cfg.preset, f"seed{cfg.seed}", cfg.method.tag)


@pytest.mark.parametrize("experiment", [e for e in group("experiment") if e != "smoke"])
def test_presets_declare_a_beta_sweep(experiment):
    cfg = compose_cfg([f"experiment={experiment}"], hydra_node=True)
    betas = [float(b) for b in str(cfg.hydra.sweeper.params["method.beta"]).split(",")]
    assert len(betas) >= 4 and all(b > 0 for b in betas)


def test_paper_preset_names_the_papers_models_and_grid():
    cfg = compose_cfg(["experiment=sentiment_paper"], hydra_node=True)
    assert cfg.model.pretrained == "gpt2-large"
    assert cfg.task.data.hf_id == "stanfordnlp/imdb" and cfg.task.data.source == "hf"
    assert cfg.task.reward.hf_id == "siebert/sentiment-roberta-large-english"
    assert cfg.task.pairs.n_prompts == 25000 and cfg.task.pairs.samples_per_prompt == 4
    assert cfg.method.learning_rate == 1e-6 and cfg.method.optimizer == "rmsprop" and cfg.method.batch_size == 64
    assert cfg.hydra.sweeper.params["method.beta"] == "0.05,0.1,1,5"


@pytest.mark.parametrize("override,message", [
    ("method.beta=0", "method.beta must be > 0"),
    ("method.beta=-1", "method.beta must be > 0"),
    ("task.pairs.n_prompts=0", "task.pairs.n_prompts must be >= 1"),
    ("task.pairs.samples_per_prompt=1", "samples_per_prompt must be >= 2"),
    ("task.eval.n_prompts=-3", "task.eval.n_prompts must be >= 1"),
    ("task.generation.max_new_tokens=0", "max_new_tokens must be >= 1"),
    ("task.data.source=web", "task.data.source must be one of"),
    ("task.prompt.min_tokens=9", "min_tokens <= max_tokens"),
    ("task.generation.max_new_tokens=500", "exceed the model context"),
    ("wandb.mode=sometimes", "wandb.mode must be one of"),
])
def test_bad_values_are_refused(override, message):
    with pytest.raises(UserError, match=message):
        validate(compose_cfg(["experiment=sentiment_embedded", override]))


def test_all_problems_reported_at_once():
    with pytest.raises(UserError) as err:
        validate(compose_cfg(["method.beta=0", "task.pairs.n_prompts=0"]))
    assert "method.beta" in str(err.value) and "n_prompts" in str(err.value)


@pytest.mark.parametrize("override", ["task=imdb_typo", "method=ppo_typo", "model=nope"])
def test_unknown_group_option_fails_at_composition(override):
    with pytest.raises(ConfigCompositionException):
        compose_cfg([override])
