"""Benchmarks: measured side by side with their baselines in one run. Not unit tests."""
