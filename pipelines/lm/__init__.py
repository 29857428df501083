"""Language-model plumbing: building and loading models, sampling (HF and vLLM), log-probs, scorers."""
