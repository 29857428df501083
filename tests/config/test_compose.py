"""Every experiment x model x method that fits the experiment's task composes, resolves and passes validation (every
task is some experiment's); bad values are refused."""
import itertools
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from pipelines.infra.io import UserError
from pipelines.run import check as validate
from tests.helpers import CONF, compose_cfg


def group(name: str) -> list[str]:
    return sorted(p.stem for p in (CONF / name).glob("*.yaml"))


# Methods that need r* (sentiment's ground-truth reward) or only make sense where it exists, and the baseline that
# only the prompt-response tasks judge.
SENTIMENT_ONLY, PROMPT_RESPONSE_ONLY = {"ppo_gt", "rloo_gt"}, {"sft", "base"}


def task_of(experiment: str) -> str:
    return compose_cfg([f"experiment={experiment}"]).task.name


def combinations():
    for experiment in group("experiment"):
        own = compose_cfg([f"experiment={experiment}"])
        text = own.task.name != "sentiment"
        # The paper-scale prompt-response presets need their model's 2k context: only their own model composes.
        models = [own.model.name] if text and own.preset == "paper" else group("model")
        for model, method in itertools.product(models, group("method")):
            if method not in (SENTIMENT_ONLY if text else PROMPT_RESPONSE_ONLY):
                yield experiment, model, method


def test_every_task_has_an_experiment():
    assert sorted({task_of(e) for e in group("experiment")}) == group("task")


@pytest.mark.parametrize("experiment,model,method", list(combinations()))
def test_every_combination_composes(experiment, model, method):
    cfg = compose_cfg([f"experiment={experiment}", f"model={model}", f"method={method}"])
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # no dangling interpolation or ???
    if method == "base" and not cfg.model.pretrained:  # a model trained from scratch has no base model to prompt
        with pytest.raises(UserError, match="method=base prompts the pretrained base model"):
            validate(cfg)
        return
    validate(cfg)
    assert Path(cfg.paths.method).parts[-3:] == (cfg.preset, f"seed{cfg.seed}", cfg.method.tag)


SWEPT = {"dpo": "method.beta", "ppo": "method.kl.target", "ppo_gt": "method.kl.target"}


@pytest.mark.parametrize("experiment,method", list(itertools.product(
    [e for e in group("experiment") if e != "smoke" and task_of(e) == "sentiment"], sorted(SWEPT))))
def test_presets_declare_each_methods_sweep(experiment, method):
    """`python -m pipelines.run -m method=<m>` sweeps the preset's grid of that method, and only its own key."""
    cfg = compose_cfg([f"experiment={experiment}", f"method={method}"], hydra_node=True)
    params = dict(cfg.hydra.sweeper.params)
    assert list(params) == [SWEPT[method]]
    values = [float(v) for v in str(params[SWEPT[method]]).split(",")]
    # PPO's runs are long and snapshot early and often, so two KL targets span its frontier; DPO needs more betas
    assert len(values) >= (2 if method.startswith("ppo") else 3) and all(v > 0 for v in values)


def test_ppo_gt_differs_from_ppo_only_in_its_reward():
    for experiment in [e for e in group("experiment") if task_of(e) == "sentiment"]:
        ppo = OmegaConf.to_container(compose_cfg([f"experiment={experiment}", "method=ppo"]).method, resolve=True)
        gt = OmegaConf.to_container(compose_cfg([f"experiment={experiment}", "method=ppo_gt"]).method, resolve=True)
        # and where PPO's value model starts from r_phi, which PPO-GT does not have
        differ = {k for k in ppo if ppo[k] != gt[k]}
        assert differ - {"value_init", "display"} == {"name", "tag", "reward"}, experiment
        assert "value_init" not in differ or gt["value_init"] == "sft", experiment


def test_paper_preset_names_the_papers_models_and_grid():
    cfg = compose_cfg(["experiment=sentiment_paper"], hydra_node=True)
    assert cfg.model.pretrained == "gpt2-large"
    assert cfg.task.data.hf_id == "stanfordnlp/imdb" and cfg.task.data.source == "hf"
    assert cfg.task.reward.hf_id == "siebert/sentiment-roberta-large-english"
    assert cfg.task.pairs.n_prompts == 25000 and cfg.task.pairs.samples_per_prompt == 4
    assert cfg.method.learning_rate == 1e-6 and cfg.method.optimizer == "rmsprop" and cfg.method.batch_size == 64
    assert cfg.hydra.sweeper.params["method.beta"] == "0.05,0.1,1,5"
    ppo = compose_cfg(["experiment=sentiment_paper", "method=ppo"], hydra_node=True)
    assert ppo.hydra.sweeper.params["method.kl.target"] == "3,6,9,12"
    assert ppo.method.batch_size == 1024 and ppo.method.normalize_scores and ppo.method.reward == "learned"
    assert ppo.reward_model.epochs == 3


@pytest.mark.parametrize("override,message", [
    ("method.beta=0", "method.beta must be > 0"),
    ("method.beta=-1", "method.beta must be > 0"),
    ("task.pairs.n_prompts=0", "task.pairs.n_prompts must be >= 1"),
    ("task.pairs.samples_per_prompt=1", "samples_per_prompt must be >= 2"),
    ("task.eval.n_prompts=-3", "task.eval.n_prompts must be >= 1"),
    ("task.generation.max_new_tokens=0", "max_new_tokens must be >= 1"),
    ("model.precision=fp16", "model.precision must be fp32 or bf16"),
    ("task.generation.backend=sglang", "task.generation.backend must be one of"),
    ("vllm_gpu_memory_utilization=1.5", "vllm_gpu_memory_utilization must be in"),
    ("task.data.source=web", "task.data.source must be one of"),
    ("task.prompt.min_tokens=9", "min_tokens <= max_tokens"),
    ("task.generation.max_new_tokens=500", "exceed the model context"),
    ("wandb.mode=sometimes", "wandb.mode must be one of"),
    ("method=ppo method.minibatch_size=48", "must divide method.batch_size"),
    ("method=ppo method.kl.target=-1", "method.kl.target must be > 0"),
    ("method=ppo_gt method.lam=0", "method.gamma and method.lam must be in"),
    ("method=ppo method.reward=oracle", "method.reward must be 'learned' or 'gt'"),
    ("method=ppo method.ref_ema_decay=1.5", "ref_ema_decay must be in"),
])
def test_bad_values_are_refused(override, message):
    with pytest.raises(UserError, match=message):
        validate(compose_cfg(["experiment=sentiment_embedded", *override.split()]))


@pytest.mark.parametrize("overrides,launch,message", [
    (["model.sft.batch_size=33"], {}, "model.sft.batch_size \\(33\\) is the global batch"),
    (["method=dpo", "method.batch_size=30"], {}, "method.batch_size \\(30\\) is the global batch"),
    (["method=ppo", "method.minibatch_size=8", "method.micro_batch_size=2"], {"WORLD_SIZE": "8"}, None),
    (["method=ppo", "method.minibatch_size=2", "method.micro_batch_size=2"], {"WORLD_SIZE": "4"},
     "minibatch_size \\(2\\) must be a multiple of the 4 processes"),
    (["method=ppo", "method.score_norm_samples=250"], {"WORLD_SIZE": "4", "ACCELERATE_USE_FSDP": "true"},
     "score_norm_samples \\(250\\) must be a multiple of the 4 processes"),
    # Under an FSDP launch PPO shards its models but still splits every minibatch over the processes.
    (["method=ppo", "method.minibatch_size=2", "method.micro_batch_size=2"],
     {"WORLD_SIZE": "4", "ACCELERATE_USE_FSDP": "true"}, "minibatch_size \\(2\\) must be a multiple of the 4"),
])
def test_batches_split_over_processes_must_divide(monkeypatch, overrides, launch, message):
    for k, v in {"WORLD_SIZE": "4", **launch}.items():
        monkeypatch.setenv(k, v)
    cfg = compose_cfg(["experiment=sentiment_embedded", *overrides])
    if message is None:
        validate(cfg)
    else:
        with pytest.raises(UserError, match=message):
            validate(cfg)


def test_all_problems_reported_at_once():
    with pytest.raises(UserError) as err:
        validate(compose_cfg(["method.beta=0", "task.pairs.n_prompts=0"]))
    assert "method.beta" in str(err.value) and "n_prompts" in str(err.value)


@pytest.mark.parametrize("override", ["task=imdb_typo", "method=ppo_typo", "model=nope"])
def test_unknown_group_option_fails_at_composition(override):
    with pytest.raises(ConfigCompositionException):
        compose_cfg([override])


@pytest.mark.parametrize("launcher,target", [
    ("local", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
    ("slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher")])
def test_launcher_presets_select_the_engines_and_keep_the_sweep(launcher, target):
    cfg = compose_cfg([f"launcher={launcher}", "method=ppo"], hydra_node=True)
    assert cfg.hydra.launcher._target_ == target
    # The preset's own sweep grid survives the launcher choice, and each job's torch threads are set for it.
    assert cfg.hydra.sweeper.params["method.kl.target"] == "1,8"
    assert cfg.threads == {"local": 1, "slurm": 8}[launcher]
    validate(cfg)
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min > 0
    # The default launches jobs one after another in the calling process.
    default = compose_cfg(["method=ppo"], hydra_node=True)
    assert default.hydra.launcher._target_.endswith("BasicLauncher") and default.threads == 2


@pytest.mark.parametrize("experiment", [e for e in group("experiment") if e.endswith("_embedded") or e == "smoke"])
def test_generation_temperature_other_than_1_is_refused(experiment):
    """Pairs, rollouts and evaluation samples are drawn at task.generation.temperature but scored (KL, PPO's
    log-probs) at T = 1: any other value is refused, in every task; the win-rate temperatures are not this key."""
    validate(compose_cfg([f"experiment={experiment}", "task.generation.temperature=1.0"]))
    with pytest.raises(UserError, match=r"task\.generation\.temperature=0\.7 is not supported: only 1\.0 is, because "
                                        r"the KL and PPO's log-probs are computed at T = 1 .*task\.winrate\."
                                        r"temperatures"):
        validate(compose_cfg([f"experiment={experiment}", "task.generation.temperature=0.7"]))


@pytest.mark.parametrize("experiment, method, clip", [
    ("sentiment_paper", "dpo", 10.0), ("sentiment_paper", "ipo", 10.0), ("summarization_paper", "dpo", 10.0),
    ("dialogue_paper", "dpo", 10.0), ("sentiment_embedded", "dpo", 1.0), ("sentiment_paper", "unlikelihood", 1.0),
])
def test_the_paper_presets_clip_the_dpo_family_as_the_reference_code(experiment, method, clip, tmp_path):
    from pipelines.lm.trainer import training_args

    cfg = compose_cfg([f"experiment={experiment}", f"method={method}", "wandb.mode=disabled"])
    assert training_args(cfg, tmp_path)["max_grad_norm"] == clip


def test_zero_offload_launches_that_would_swap_the_optimiser_or_the_clip_are_refused(monkeypatch):
    from pipelines.infra.io import UserError
    from pipelines.run import check

    dpo = ["experiment=summarization_paper", "method=dpo", "wandb.mode=disabled"]
    check(compose_cfg(dpo))  # no launch: fine
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "cpu")
    monkeypatch.setenv("ACCELERATE_GRADIENT_CLIPPING", "1.0")
    with pytest.raises(UserError) as err:
        check(compose_cfg(dpo))
    assert "method.optimizer=rmsprop" in str(err.value) and "DeepSpeedCPUAdam" in str(err.value)
    assert "method.max_grad_norm=10.0 but the DeepSpeed launch config clips at 1.0" in str(err.value)
    # AdamW with the launch's clip goes through; without offload RMSprop is kept by DeepSpeed and is fine
    check(compose_cfg([*dpo, "method.optimizer=adamw_torch", "method.max_grad_norm=1.0"]))
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none")
    with pytest.raises(UserError, match="clips at 1.0"):  # ZeRO-3 without offload: the clip must still agree
        check(compose_cfg(dpo))
    monkeypatch.delenv("ACCELERATE_GRADIENT_CLIPPING")
    check(compose_cfg(dpo))
    # The HH SFT (the reference code's RMSprop) under offload: refused as well; the TL;DR SFT (AdamW) is fine.
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "cpu")
    with pytest.raises(UserError, match="model.sft.optimizer=rmsprop"):
        check(compose_cfg(["experiment=dialogue_paper", "method=bon", "wandb.mode=disabled"]))
    check(compose_cfg(["experiment=summarization_paper", "method=bon", "wandb.mode=disabled"]))
    # ... and its clip (10, the reference code's) against a launch that clips at 1.0, without offload
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none")
    monkeypatch.setenv("ACCELERATE_GRADIENT_CLIPPING", "1.0")
    with pytest.raises(UserError, match="model.sft.max_grad_norm=10.0 but the DeepSpeed launch config clips at 1.0"):
        check(compose_cfg(["experiment=dialogue_paper", "method=bon", "wandb.mode=disabled"]))


class _GPU:
    total_memory = 80 * 2 ** 30


@pytest.mark.parametrize("launch,refused", [
    ({"WORLD_SIZE": "1"}, True),  # GPT-J PPO on one 80 GB GPU: ~240 GB of models
    ({"WORLD_SIZE": "8"}, True),  # DDP replicates them in every process
    ({"WORLD_SIZE": "8", "ACCELERATE_USE_FSDP": "true"}, False),  # sharded over 8: ~30 GB each
    ({"WORLD_SIZE": "8", "ACCELERATE_USE_DEEPSPEED": "true"}, False),
])
def test_ppo_that_cannot_fit_the_gpus_is_refused_before_training(monkeypatch, launch, refused):
    import torch

    for k, v in launch.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i=0: _GPU())
    cfg = compose_cfg(["experiment=summarization_paper", "method=ppo", "wandb.mode=disabled"])
    if refused:
        with pytest.raises(UserError, match=r"PPO on EleutherAI/gpt-j-6b \(6\.0B parameters\) needs ~\d+ GiB per "
                                            r"process .* this GPU has 80 GiB.*ACCELERATE=fsdp"):
            validate(cfg)
    else:
        validate(cfg)
    # gpt2-large (sentiment paper) fits one GPU: ~29 GiB
    monkeypatch.setenv("WORLD_SIZE", "1")
    for k in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"):
        monkeypatch.delenv(k, raising=False)
    validate(compose_cfg(["experiment=sentiment_paper", "method=ppo", "wandb.mode=disabled"]))
