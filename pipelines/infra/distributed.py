"""Several processes on one node under `accelerate launch` (DDP, FSDP, DeepSpeed ZeRO-3; conf/accelerate/).

Every process runs the same pipeline. The Trainer stages (SFT, the reward model, and the training of the DPO family,
Preferred-FT, Unlikelihood and RLOO) run in all processes at once: the Trainer splits each batch across them. Our PPO
loop does too, each process its share of the batch: with whole weights in every process under DDP or torchrun
(`Replicas`: torch DDP), sharded with torch FSDP2 under FSDP or DeepSpeed launches (data_parallel.Sharded). Every
other stage (data, r*,
pairs, evaluation, win rates, Best-of-N) runs in the main process alone while the others wait. The main process
owns the bookkeeping: it takes the stage's file lock, decides skip / run / refuse, and writes
stage_config.json and done.json; the decision reaches the others as one broadcast integer.

The process group is opened here, before any Trainer, with a long timeout: a process waiting for a long main-only
stage (Best-of-N, or PPO under an FSDP launch, runs for hours at paper scale) must not be killed by the collective's
default 30-minute watchdog. The Trainer then finds the group initialised and uses it. If one process fails, the
launcher stops the others.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch

# A waiting process gives up after this long (the longest main-only stage must fit).
WAIT = timedelta(hours=72)
SKIP, RUN, REFUSE = 0, 1, 2


def free_port() -> int:
    """A TCP port no process on this machine listens on now (a rendezvous of our own: vLLM's engine, tests)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


class Group:
    """The process group of a multi-process launch (torch.distributed, env:// rendezvous set up by the launcher)."""

    def __init__(self):
        import torch.distributed as dist

        self.dist = dist
        use_cuda = torch.cuda.is_available() and os.environ.get("ACCELERATE_USE_CPU", "false").lower() != "true"
        if use_cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        self.device = torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo", timeout=WAIT)

    def decide(self, code: int | None) -> int:
        """The main process's decision (SKIP, RUN or REFUSE) in every process."""
        box = torch.tensor([-1 if code is None else code], dtype=torch.long, device=self.device)
        self.dist.broadcast(box, src=0)
        return int(box.item())

    def barrier(self) -> None:
        self.dist.barrier()


_group: Group | None = None


def group() -> Group | None:
    """The process group when launched with several processes, else None (the single-process path)."""
    global _group
    if world_size() <= 1:
        return None
    if _group is None:
        _group = Group()
    return _group


def per_process(batch_size: int) -> int:
    """A configured batch size is the global batch of one optimiser step (the paper's 64 pairs stay 64 on 8 GPUs):
    each process of a multi-process launch takes batch_size / processes of it (validate checks divisibility)."""
    return max(1, batch_size // world_size())


def save_trained(trainer, folder) -> None:
    """Save a Trainer's model as safetensors (with its tokenizer, when the Trainer has one). Called in every process:
    under FSDP or ZeRO-3 the shards are gathered collectively, and only the main process writes. Trainer also writes
    its pickled training_args.bin, which nothing here reads; it is removed."""
    from pathlib import Path

    trainer.save_model(str(folder))
    if is_main():
        (Path(folder) / "training_args.bin").unlink(missing_ok=True)


def replicates_weights() -> bool:
    """False under a launch that shards the weights across processes (accelerate's FSDP or DeepSpeed configs): the
    Trainer stages then save through the Trainer, and our PPO loop shards its models too (data_parallel.Sharded)."""
    return not any(os.environ.get(k, "false").lower() == "true"
                   for k in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"))


def is_sharded(model) -> bool:
    """Whether `model` is sharded over the processes by torch FSDP2 (pipelines/infra/data_parallel.py: Sharded)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


class Replicas:
    """The processes that train one model data-parallel, each holding a full copy (torch DDP: gradients averaged
    across processes after each backward). `active=False`, or a single-process run, is this process alone: every
    method is then the identity and no collective is called."""

    def __init__(self, active: bool):
        on = active and world_size() > 1
        self.group = group() if on else None
        self.size = world_size() if on else 1
        self.rank = rank() if on else 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This process's share of `items` (every size-th item, from its rank)."""
        return items[self.rank::self.size]

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """The module for the backward passes: DDP-wrapped across the replicas, or the module itself."""
        if self.group is None:
            return module
        from torch.nn.parallel import DistributedDataParallel

        device = next(module.parameters()).device
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    def no_sync(self, modules: list[torch.nn.Module], skip: bool):
        """Context in which backward passes accumulate gradients locally (no all-reduce) when `skip`."""
        from contextlib import ExitStack

        stack = ExitStack()
        if skip and self.group is not None:
            for m in modules:
                if hasattr(m, "no_sync"):
                    stack.enter_context(m.no_sync())
        return stack

    def all_sum(self, x: torch.Tensor) -> torch.Tensor:
        """Elementwise sum over the replicas (a new tensor)."""
        if self.group is None:
            return x
        out = x.clone()
        self.group.dist.all_reduce(out)
        return out

    def batch_mean(self, means: torch.Tensor, n: int) -> torch.Tensor:
        """Means over every replica's items, from each replica's `means` over its `n` items (as they are alone)."""
        if self.group is None:
            return means
        total = self.all_sum(torch.cat([means.double() * n, torch.tensor([float(n)], dtype=torch.float64,
                                                                          device=means.device)]))
        return (total[:-1] / total[-1]).to(means.dtype)

    def mean_std(self, x: torch.Tensor) -> tuple[float, float]:
        """Mean and unbiased standard deviation of the values of `x` in every replica together."""
        if self.group is None:
            return float(x.mean()), float(x.std())
        s = self.all_sum(torch.stack([x.sum(), (x * x).sum(), torch.tensor(float(x.numel()), device=x.device)])
                         .double())
        n, mean = float(s[2]), float(s[0] / s[2])
        return mean, max(0.0, (float(s[1]) - n * mean * mean) / max(1.0, n - 1)) ** 0.5

    def barrier(self) -> None:
        if self.group is not None:
            self.group.barrier()

    def check_in_sync(self, module: torch.nn.Module) -> None:
        """Raise if the replicas' weights differ (DDP keeps them bit-identical: the same averaged gradients and the
        same optimiser step in every process)."""
        if self.group is None:
            return
        with torch.no_grad():
            local = torch.stack([torch.stack([p.double().sum(), p.double().abs().sum()])
                                 for p in module.parameters()]).flatten()
        high, low = local.clone(), local.clone()
        self.group.dist.all_reduce(high, op=self.group.dist.ReduceOp.MAX)
        self.group.dist.all_reduce(low, op=self.group.dist.ReduceOp.MIN)
        if not torch.equal(high, low):
            raise RuntimeError(f"data-parallel replicas diverged: {int((high != low).sum())} of {local.numel()} "
                               "weight checksums differ between processes")
