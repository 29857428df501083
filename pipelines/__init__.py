"""Hydra-configured stages of the rlhf-vs-dpo benchmark. Entry point: `python -m pipelines.run`."""
