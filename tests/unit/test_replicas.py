"""Data-parallel helpers of our own loops (pipelines/infra/distributed.py: Replicas) in two real gloo processes, and the
identity they are in a single process: sums, means, whitening of a batch split over processes, DDP gradient
averaging and the check that catches replicas whose weights diverged."""
import os

import pytest
import torch

from pipelines.infra import distributed
from pipelines.numerics import ppo_math as pm
from tests.helpers import join_two_ranks, spawn_two_ranks


def _worker(rank: int, port: int, out_dir: str) -> None:
    join_two_ranks(rank, port)
    rep = distributed.Replicas(active=True)
    results = {"size": rep.size, "rank": rep.rank, "shard": rep.shard(list(range(7)))}
    results["sum"] = rep.all_sum(torch.tensor([1.0 + rank, 10.0])).tolist()
    # rank 0 holds 1, 2, 3; rank 1 holds 4, 5: mean 3, unbiased std sqrt(2.5)
    local = torch.tensor([1.0, 2.0, 3.0]) if rank == 0 else torch.tensor([4.0, 5.0])
    results["mean_std"] = rep.mean_std(local)
    results["batch_mean"] = rep.batch_mean(local.mean().reshape(1), local.numel()).tolist()
    # Whitening each half with the all-sum equals whitening the whole batch.
    g = torch.Generator().manual_seed(0)
    x, mask = torch.randn(6, 5, generator=g), torch.rand(6, 5, generator=g) > 0.3
    rows = slice(0, 3) if rank == 0 else slice(3, 6)
    results["whiten_split"] = pm.whiten(x[rows], mask[rows], all_sum=rep.all_sum).tolist()
    results["whiten_whole"] = pm.whiten(x, mask)[rows].tolist()
    # DDP: each process a different input; after backward both hold the mean gradient, after a step equal weights.
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    wrapped = rep.wrap(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    inputs = torch.full((2, 3), float(rank + 1))
    with rep.no_sync([wrapped], skip=True):  # accumulated locally: no all-reduce yet
        wrapped(inputs).sum().backward()
    results["local_grad"] = model.weight.grad.clone().tolist()
    model.weight.grad = None
    wrapped(inputs).sum().backward()
    results["synced_grad"] = model.weight.grad.tolist()
    opt.step()
    rep.check_in_sync(model)
    with torch.no_grad():
        model.bias += rank  # rank 1 drifts
    try:
        rep.check_in_sync(model)
        results["diverged_caught"] = False
    except RuntimeError as err:
        results["diverged_caught"] = "diverged" in str(err)
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    # Tear down in order: both processes done with every collective, the DDP wrapper (which holds the group) gone,
    # then the group. (A full-suite CI run once saw a process abort at exit here: "terminate called without an
    # active exception" from gloo's threads.)
    rep.barrier()
    del wrapped
    rep.group.dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("replicas")
    spawn_two_ranks(_worker, out, ["rank0.pt", "rank1.pt"])
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_shares_and_reductions(two_ranks):
    r0, r1 = two_ranks
    assert (r0["size"], r0["rank"], r1["rank"]) == (2, 0, 1)
    assert r0["shard"] == [0, 2, 4, 6] and r1["shard"] == [1, 3, 5]
    assert r0["sum"] == r1["sum"] == [3.0, 20.0]
    for r in two_ranks:
        assert r["mean_std"][0] == pytest.approx(3.0) and r["mean_std"][1] == pytest.approx(2.5 ** 0.5)
        assert r["batch_mean"] == pytest.approx([3.0])


def test_whitening_a_split_batch_equals_the_whole(two_ranks):
    for r in two_ranks:
        assert torch.allclose(torch.tensor(r["whiten_split"]), torch.tensor(r["whiten_whole"]), atol=1e-6)


def test_ddp_averages_gradients_and_the_divergence_check_fires(two_ranks):
    r0, r1 = two_ranks
    # d/dw sum(w.x + b) over 2 rows of value v = 2v per weight: 2 (rank 0), 4 (rank 1); mean 3
    assert r0["local_grad"] == [[2.0] * 3] and r1["local_grad"] == [[4.0] * 3]
    assert r0["synced_grad"] == r1["synced_grad"] == [[3.0] * 3]
    assert r0["diverged_caught"] and r1["diverged_caught"]


def test_single_process_is_the_identity(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # a launch of 2, but this helper asked not to be data-parallel
    rep = distributed.Replicas(active=False)
    assert (rep.size, rep.rank, rep.main) == (1, 0, True)
    x = torch.tensor([1.0, 2.0, 4.0])
    assert rep.all_sum(x) is x and rep.shard([1, 2, 3]) == [1, 2, 3]
    assert rep.mean_std(x) == (float(x.mean()), float(x.std()))
    model = torch.nn.Linear(2, 1)
    assert rep.wrap(model) is model
    rep.check_in_sync(model)
    rep.barrier()


def test_sharded_launches_do_not_replicate_weights(monkeypatch):
    assert distributed.replicates_weights()
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert not distributed.replicates_weights()
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "True")
    assert not distributed.replicates_weights()
