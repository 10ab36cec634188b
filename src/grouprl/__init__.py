"""grouprl: critic-free, group-relative RL (GRPO and its successors) for causal language models."""

__version__ = "0.1.0"
