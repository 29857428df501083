"""The processes of a launch as a training loop of our own sees them (PPO, baselines/ppo.py): a few verbs over
`Replicas` (pipelines/infra/distributed.py: the DDP wrapper, the all-reduces, the main process), so that the loop
is written once and reads the same alone and data-parallel.

Under a launch that keeps whole weights in every process (DDP, torchrun) each process samples, scores and updates
on its share of every batch and minibatch; DDP averages the gradients; statistics that must be the whole batch's
(advantage whitening, score normalisation, the KL controller's KL, the logged means) are summed over the processes;
the main process alone writes files. Alone (one process, or `active=False`) every verb below is the identity and
no collective is called: a single-process run computes exactly what it would without this module."""
from __future__ import annotations

from collections.abc import Callable

import torch

from pipelines.infra.distributed import Replicas


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
