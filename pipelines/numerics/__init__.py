"""Pure, golden-tested math: PPO's advantages and losses, the baselines' losses, estimators."""
