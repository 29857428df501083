"""PPO with its models sharded by torch FSDP2 (pipelines/infra/data_parallel.py: Sharded, what an FSDP or DeepSpeed
launch gets) computes what the data-parallel PPO computes, in two real gloo processes on CPU: the same metrics and
weights step for step (up to float summation order), a resume from a sharded checkpoint that continues exactly, and
frontier snapshots that hold the full gathered weights. Sampling runs on the sharded policy with processes whose
completions end at different lengths (each keeps stepping until both are done)."""
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from transformers import GPT2Config, GPT2LMHeadModel

from tests.helpers import join_two_ranks, spawn_two_ranks

STEPS = 3
VOCAB, EOS = 12, 0
ARGS = dict(learning_rate=3e-3, value_learning_rate=3e-3, lr_schedule="linear", total_steps=STEPS,
            kl=dict(target=4.0, init_coef=0.2, horizon=100), batch_size=8, minibatch_size=4, micro_batch_size=1,
            ppo_epochs=2, gamma=1.0, lam=0.95, clip_range=0.2, clip_range_value=0.2, vf_coef=0.1, max_grad_norm=1.0,
            whiten_advantages=True, normalize_scores=False, missing_eos_penalty=None, ref_ema_decay=0.9)


def _policy() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=16, n_embd=16, n_layer=2, n_head=2, initializer_range=0.3,
                     bos_token_id=EOS, eos_token_id=EOS, pad_token_id=EOS)
    return GPT2LMHeadModel(cfg).eval()


def _score(prompts, completions):
    """A reward that depends on the completion (count of token 3, length)."""
    return [float(c.count(3)) - 0.1 * len(c) for c in completions]


def _prompts(step: int) -> list[list[int]]:
    # Eight prompts of varying length; each process gets every other one.
    return [[1 + (step + i) % 5] * (1 + i % 3) + [2] for i in range(8)]


def _learner(dp, models=None):
    from baselines.ppo import PPO, ValueModel

    policy, ref, value = models or (_policy(), _policy(), ValueModel(_policy().transformer))
    return PPO(policy, ref, value, _score, OmegaConf.create(ARGS), eos_id=EOS, pad_id=EOS, max_new_tokens=5, seed=0,
               generation_batch_size=2, replicas=dp)


def _run(ppo, steps) -> list[dict]:
    keys = ("objective/kl", "objective/scores", "loss/policy", "loss/value", "policy/approxkl", "objective/kl_coef")
    return [{k: ppo.step(s, ppo.dp.shard(_prompts(s)))[k] for k in keys} for s in steps]


def _worker(rank: int, port: int, out_dir: str) -> None:
    join_two_ranks(rank, port)
    from baselines.ppo_checkpoint import RunFolder, load_state
    from baselines.ppo_models import ValueModel
    from pipelines.infra import distributed
    from pipelines.infra.data_parallel import DataParallel, Sharded
    from pipelines.lm.models import load_policy

    out = Path(out_dir)
    results: dict = {}
    # Replicated (DDP) reference run.
    ddp = _learner(DataParallel(active=True))
    results["ddp"] = _run(ddp, range(STEPS))
    results["ddp_policy"] = {k: v.clone() for k, v in ddp.policy.state_dict().items()}
    # The same run sharded; a checkpoint after step 2 (collective), then step 3.
    sharded = _learner(Sharded())
    results["sharded"] = _run(sharded, range(STEPS - 1))
    folder = RunFolder(out / "run", sharded.dp)
    folder.checkpoint(sharded, STEPS - 1)
    results["sharded"] += _run(sharded, [STEPS - 1])
    folder.snapshot(sharded, STEPS)
    state = sharded.dp.full_state(sharded.policy)
    value_state = sharded.dp.full_state(sharded.value_model)
    if rank == 0:
        results["sharded_policy"] = state
        results["sharded_value"] = value_state
    # Resume: fresh sharded models from the checkpoint's files, its optimiser states, then step 3 again.
    last = out / "run" / "last"
    resumed = _learner(Sharded(), (load_policy(last / "policy"), load_policy(last / "ref"),
                                   ValueModel.load(last / "value")))
    results["resumed_from"] = load_state(resumed, last)
    results["resumed"] = _run(resumed, [STEPS - 1])
    resumed_state = resumed.dp.full_state(resumed.policy)
    if rank == 0:
        results["resumed_policy"] = resumed_state
    torch.save(results, out / f"rank{rank}.pt")
    ddp.dp.barrier()
    distributed._group.dist.destroy_process_group()


pytestmark = pytest.mark.heavy  # two processes, three runs: ~30 s on 2 cores


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded_ppo")
    spawn_two_ranks(_worker, out, ["rank0.pt", "rank1.pt"])
    return out, [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def _close(a: dict, b: dict, tol: float = 1e-5) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) <= tol * max(1.0, abs(a[k])) for k in a)


def test_sharded_ppo_computes_what_data_parallel_ppo_computes(two_ranks):
    _, (r0, r1) = two_ranks
    for r in (r0, r1):
        assert len(r["sharded"]) == STEPS
        for ddp_row, sharded_row in zip(r["ddp"], r["sharded"]):
            assert _close(ddp_row, sharded_row), (ddp_row, sharded_row)
    # The runs moved (a test of equal nothing would pass too): KL away from 0, the weights changed.
    assert r0["ddp"][-1]["objective/kl"] != 0.0
    start = _policy().state_dict()
    moved = max(float((r0["ddp_policy"][k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-2
    # Adam divides by the root of tiny second moments: summation-order differences of 1e-7 in a gradient reach the
    # weights as ~1e-5 after three steps (measured), against a movement of ~0.09.
    for k, v in r0["ddp_policy"].items():
        assert torch.allclose(v, r0["sharded_policy"][k], atol=5e-5), k


def test_a_sharded_run_resumes_exactly_from_its_checkpoint(two_ranks):
    _, (r0, r1) = two_ranks
    for r in (r0, r1):
        assert r["resumed_from"] == STEPS - 1
        assert _close(r["resumed"][0], r["sharded"][-1], tol=1e-6), (r["resumed"][0], r["sharded"][-1])
    for k, v in r0["sharded_policy"].items():
        assert torch.allclose(v, r0["resumed_policy"][k], atol=1e-6), k


def test_sharded_snapshots_and_checkpoints_hold_the_full_weights(two_ranks):
    from baselines.ppo_models import ValueModel
    from pipelines.lm.models import load_policy

    out, (r0, _) = two_ranks
    snap = load_policy(out / "run" / "snapshots" / f"step{STEPS:06d}")
    for k, v in snap.state_dict().items():
        assert torch.equal(v, r0["sharded_policy"][k]), k
    assert snap.config.architectures == ["GPT2LMHeadModel"]  # not FSDP's wrapper class name
    # The checkpoint's value model: trunk and head written from the gathered state.
    value = ValueModel.load(out / "run" / "last" / "value")
    assert value.head.weight.abs().sum() > 0  # trained away from its zero start
    assert set(value.state_dict()) == {k for k in r0["sharded_value"]}


def _optimum_worker(rank: int, port: int, out_dir: str) -> None:
    """The analytic-optimum problem of tests/unit/test_analytic_optimum.py, PPO sharded over two processes."""
    join_two_ranks(rank, port)
    from baselines.ppo import PPO, ValueModel
    from pipelines.infra import distributed
    from pipelines.infra.data_parallel import Sharded
    from tests.unit import test_analytic_optimum as ao

    policy, ref, value = ao.tiny_policy(), ao.tiny_policy(), ValueModel(ao.tiny_policy().transformer)
    args = OmegaConf.create(dict(
        learning_rate=3e-3, value_learning_rate=3e-3, lr_schedule="constant", total_steps=150,
        kl=dict(target=None, init_coef=ao.BETA, horizon=1), batch_size=256, minibatch_size=128,
        micro_batch_size=128, ppo_epochs=2, gamma=1.0, lam=0.95, clip_range=0.2, clip_range_value=0.2,
        vf_coef=0.1, max_grad_norm=1.0, whiten_advantages=True, normalize_scores=False, missing_eos_penalty=None,
        ref_ema_decay=None))
    ppo = PPO(policy, ref, value, lambda p, c: [float(ao.REWARD[x[0]]) for x in c], args, eos_id=0, pad_id=0,
              max_new_tokens=1, seed=0, generation_batch_size=128, replicas=Sharded())
    for step in range(150):
        ppo.step(step, ppo.dp.shard([ao.PROMPT] * 256))
    state = ppo.dp.full_state(ppo.policy)
    if rank == 0:
        final = ao.tiny_policy()
        final.load_state_dict(state)
        torch.save({"final": ao.next_token_dist(final), "ref": ao.next_token_dist(ao.tiny_policy())},
                   Path(out_dir) / "optimum.pt")
    ppo.dp.barrier()
    distributed._group.dist.destroy_process_group()


@pytest.mark.slow  # 150 PPO steps in two processes: minutes (make test-all)
def test_sharded_ppo_converges_to_the_analytic_optimum(tmp_path):
    from tests.unit import test_analytic_optimum as ao

    spawn_two_ranks(_optimum_worker, tmp_path, ["optimum.pt"])
    result = torch.load(tmp_path / "optimum.pt", weights_only=True)
    target = ao.optimum(result["ref"], ao.BETA)
    assert ao.tv(result["final"], target) < ao.TV_BOUND, (result["final"], target)
    assert ao.tv(result["ref"], target) > 0.25  # it moved the whole way from pi_ref
