"""Metric sinks (JSONL always; console progress), plots and the run report."""
