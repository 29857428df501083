"""Several processes on one node under `accelerate launch` (DDP, FSDP, DeepSpeed ZeRO-3; conf/accelerate/).

Every process runs the same pipeline. The Trainer stages (SFT, the reward model, and the training of the DPO family,
Preferred-FT, Unlikelihood and RLOO) run in all processes at once: the Trainer splits each batch across them. Every
other stage (data, r*, pairs, evaluation, win rates, PPO, Best-of-N) runs in the main process alone while the others
wait. The main process owns the bookkeeping: it takes the stage's file lock, decides skip / run / refuse, and writes
stage_config.json and done.json; the decision reaches the others as one broadcast integer.

The process group is opened here, before any Trainer, with a long timeout: a process waiting for a long main-only
stage (PPO runs for hours at paper scale) must not be killed by the collective's default 30-minute watchdog. The
Trainer then finds the group initialised and uses it. If one process fails, the launcher stops the others.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch

# A waiting process gives up after this long (the longest main-only stage must fit).
WAIT = timedelta(hours=72)
SKIP, RUN, REFUSE = 0, 1, 2


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


def save_trained(trainer, folder) -> None:
    """Save a Trainer's model as safetensors (with its tokenizer, when the Trainer has one). Called in every process:
    under FSDP or ZeRO-3 the shards are gathered collectively, and only the main process writes. Trainer also writes
    its pickled training_args.bin, which nothing here reads; it is removed."""
    from pathlib import Path

    trainer.save_model(str(folder))
    if is_main():
        (Path(folder) / "training_args.bin").unlink(missing_ok=True)
