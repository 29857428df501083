"""One frontier point from per-sample values: mean reward and the sequence-level KL(pi || pi_ref), each with its
standard error, and n. An `evaluate` metric module kept in the repo (Hub metrics are unreachable offline):
load it with `evaluate.load("pipelines/numerics/metrics/sequence_kl_reward")`.

KL(pi || pi_ref) = E_{y ~ pi}[log pi(y|x) - log pi_ref(y|x)] is estimated by the mean over samples drawn from pi
of the sequence log-ratio (sum over completion tokens, EOS included). s.e. = sample sd / sqrt(n).
"""
import math

import datasets
import evaluate

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    policy_logps: log pi(y|x) for each sample y ~ pi (sum over completion tokens).
    ref_logps: log pi_ref(y|x) for the same samples.
    rewards: r*(x, y) for the same samples.
Returns:
    kl, kl_se, reward, reward_se, n
"""


def _mean_se(values):
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var / n)


class SequenceKlReward(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"policy_logps": datasets.Value("float64"),
                                        "ref_logps": datasets.Value("float64"),
                                        "rewards": datasets.Value("float64")}))

    def _compute(self, policy_logps, ref_logps, rewards):
        if not rewards:
            raise ValueError("no samples")
        kl, kl_se = _mean_se([p - r for p, r in zip(policy_logps, ref_logps)])
        reward, reward_se = _mean_se(list(rewards))
        return {"kl": kl, "kl_se": kl_se, "reward": reward, "reward_se": reward_se, "n": len(rewards)}
