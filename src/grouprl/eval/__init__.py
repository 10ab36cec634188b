"""Held-out evaluation: greedy pass@1, sampled pass@k and mean@k."""
