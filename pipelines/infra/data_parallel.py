"""The processes of a launch as a training loop of our own sees them (PPO, baselines/ppo.py): a few verbs over
`Replicas` (pipelines/infra/distributed.py: the DDP wrapper, the all-reduces, the main process), so that the loop
is written once and reads the same alone, data-parallel and sharded.

Under a launch that keeps whole weights in every process (DDP, torchrun) each process samples, scores and updates
on its share of every batch and minibatch; DDP averages the gradients; statistics that must be the whole batch's
(advantage whitening, score normalisation, the KL controller's KL, the logged means) are summed over the processes;
the main process alone writes files. Alone (one process, or `active=False`) every verb below is the identity and
no collective is called: a single-process run computes exactly what it would without this module.

Under a launch that shards weights (accelerate's FSDP or DeepSpeed configs: `Sharded`) the loop is the same
data-parallel loop, but every model is sharded over the processes with torch FSDP2 (`fully_shard` on each
transformer block and on the whole model): weights, gradients and Adam state take 1/size of their memory in each
process. Forward passes gather a block's weights just before it runs and free them after, so every process must make
the same forward calls: the loop gives each the same number of prompts, and sampling keeps generating until every
process is done (`synced_gpus`). Saving gathers the full weights into the main process (`full_state`). We shard with
torch's FSDP2 under a DeepSpeed launch too: the loop is ours, not the launch's Trainer, and one engine keeps one set
of tests (two gloo processes on CPU, tests/unit/test_sharded_ppo.py)."""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from unittest import mock

import torch

from pipelines.infra.distributed import Group, Replicas, free_port, replicates_weights, world_size
from pipelines.infra.io import UserError


class DataParallel(Replicas):
    """`Replicas` (shard, wrap, batch_mean, mean_std, barrier, check_in_sync, main) plus the loop's own verbs."""

    def seed_tag(self, tag: str) -> str:
        """A sampling / shuffling seed tag of this process: each process draws its own samples."""
        return tag if self.size == 1 else f"{tag}/rank{self.rank}"

    def local(self, global_size: int) -> int:
        """This process's share of a global batch size (validated to divide by the number of processes)."""
        return global_size // self.size

    def total(self, local_count: int) -> int:
        """The number of items over every process, from this process's count (the same in each)."""
        return local_count * self.size

    @property
    def whole_batch_sum(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The sum over processes for statistics of the whole batch (pipelines.numerics.ppo_math.whiten's
        `all_sum`), or None alone: the statistics are then this process's own, computed as they always were."""
        return self.all_sum if self.size > 1 else None

    def accumulate(self, modules: list[torch.nn.Module], sync: bool):
        """Context of one micro-batch's backward: gradients accumulate locally unless `sync` (the minibatch's last
        micro-batch, where DDP all-reduces them)."""
        return self.no_sync(modules, skip=not sync)

    def frozen(self, module: torch.nn.Module) -> torch.nn.Module:
        """A model that is only run forward (the reference, the reward model): as it is in every process."""
        return module

    def place(self, module: torch.nn.Module) -> torch.nn.Module:
        """A model just loaded: sharded in place over the processes, or (here) as it is."""
        return module

    def full_state(self, module: torch.nn.Module) -> dict | None:
        """The module's whole state dict in the main process (None elsewhere); collective when sharded."""
        return module.state_dict() if self.main else None

    def optimizer_state(self, module: torch.nn.Module, opt: torch.optim.Optimizer) -> dict | None:
        """The optimiser's whole state in the main process, for the resume checkpoint (None elsewhere)."""
        return opt.state_dict() if self.main else None

    def load_optimizer_state(self, module: torch.nn.Module, opt: torch.optim.Optimizer, state: dict | None) -> None:
        """Restore `optimizer_state` (read by every process here; by the main one alone when sharded)."""
        opt.load_state_dict(state)

    @property
    def sharded(self) -> bool:
        return False


class Sharded(DataParallel):
    """The processes of a launch that shards weights: DataParallel's verbs, with every model sharded by FSDP2
    (module docstring). `wrap` and `frozen` shard a model in place; build optimisers after wrapping."""

    def __init__(self, alone: Group | None = None):
        """Over the processes of the launch; or, given `alone` (a process group of this process only), over this
        process alone: the sharded code path on one device (make gpu-smoke, `one_process`)."""
        super().__init__(active=True)
        from torch.distributed.device_mesh import init_device_mesh

        if alone is not None:
            self.group, self.size, self.rank = alone, 1, 0

        self.mesh = init_device_mesh(self.group.device.type, (self.size,))

    @property
    def sharded(self) -> bool:
        return True

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import FSDPModule, fully_shard

        if isinstance(module, FSDPModule):
            return module
        blocks = {name for sub in module.modules() for name in (getattr(sub, "_no_split_modules", None) or [])}
        if not blocks:
            raise UserError(f"cannot shard {type(module).__name__}: it names no transformer block class "
                            "(_no_split_modules)")
        # Every group frees its gathered weights after its forward, the root's too (FSDP2 would keep the root's
        # gathered): between steps every parameter is its shard, and the EMA reference update pairs shards.
        for sub in module.modules():
            if sub is not module and type(sub).__name__ in blocks:
                fully_shard(sub, mesh=self.mesh, reshard_after_forward=True)
        fully_shard(module, mesh=self.mesh, reshard_after_forward=True)
        return module

    frozen = place = wrap

    def accumulate(self, modules: list[torch.nn.Module], sync: bool):
        """Micro-batches before the minibatch's last keep their gradients unsharded and local; the last one
        reduce-scatters the sum (FSDP2's set_requires_gradient_sync)."""
        for m in modules:
            m.set_requires_gradient_sync(sync)
        return nullcontext()

    def full_state(self, module: torch.nn.Module) -> dict | None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        return state if self.main else None

    def optimizer_state(self, module: torch.nn.Module, opt: torch.optim.Optimizer) -> dict | None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        state = get_optimizer_state_dict(module, opt, options=StateDictOptions(full_state_dict=True,
                                                                              cpu_offload=True))
        return state if self.main else None

    def load_optimizer_state(self, module: torch.nn.Module, opt: torch.optim.Optimizer, state: dict | None) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(module, opt, optim_state_dict=state if self.main else {},
                                 options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))

    def check_in_sync(self, module: torch.nn.Module) -> None:
        """Nothing to compare: each process holds a different shard, and FSDP2 keeps one copy of each."""


def for_launch() -> DataParallel:
    """The processes of this launch as the loop sees them: sharded under an FSDP or DeepSpeed launch of several
    processes, data-parallel under DDP or torchrun, this process alone otherwise."""
    if world_size() > 1 and not replicates_weights():
        return Sharded()
    return DataParallel(active=replicates_weights())


@contextmanager
def one_process() -> Iterator[Sharded]:
    """`Sharded` over a process group of this process alone (NCCL on a GPU, gloo on a CPU), opened on a free local
    port and closed on exit: every FSDP2 wrap, gather and collective of the sharded loop runs, on one device. The
    rendezvous variables (MASTER_PORT, RANK, WORLD_SIZE, ...) hold inside the block and are restored on exit."""
    import torch.distributed as dist

    rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "RANK": "0", "LOCAL_RANK": "0",
                  "WORLD_SIZE": "1"}
    if dist.is_initialized():
        raise RuntimeError("one_process: a process group is already open in this process")
    with mock.patch.dict(os.environ, rendezvous):  # the environment as it was, on exit
        try:
            yield Sharded(alone=Group())
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
