"""Methods that are not TRL's: the PPO-based RLHF baseline and the paper's other baselines."""
