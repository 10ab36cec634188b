"""Prompt data: dataset loading, formatting and collation; ``tasks/`` holds the built-in generated tasks."""
