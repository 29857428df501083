"""The verbs PPO's loop is written in (pipelines/infra/data_parallel.py): the identity for one process, each
process's share under a launch (the collectives themselves: tests/unit/test_replicas.py)."""
import torch

from pipelines.infra.data_parallel import DataParallel


def test_alone_every_verb_is_the_identity():
    dp = DataParallel(active=False)
    assert dp.size == 1 and dp.main
    assert dp.seed_tag("ppo/rollout/3") == "ppo/rollout/3"
    assert dp.local(32) == 32 and dp.total(7) == 7
    assert dp.whole_batch_sum is None  # whitening then takes its own statistics, as without a launch
    model = torch.nn.Linear(2, 1)
    assert dp.wrap(model) is model
    with dp.accumulate([model], sync=False):
        model(torch.ones(1, 2)).sum().backward()
    assert model.weight.grad is not None
    means = torch.tensor([1.0, 2.0])
    assert dp.batch_mean(means, 2) is means and dp.shard([1, 2, 3]) == [1, 2, 3]


def test_under_a_launch_each_process_takes_its_share():
    dp = DataParallel(active=False)
    dp.size, dp.rank = 4, 2  # the verbs read only these (no process group is needed to test them)
    assert dp.seed_tag("ppo/minibatches") == "ppo/minibatches/rank2"
    assert dp.local(32) == 8 and dp.total(8) == 32
    assert dp.whole_batch_sum == dp.all_sum
    assert dp.shard(list(range(10))) == [2, 6]
