"""Accuracy, size, MACs, latency and text-model metrics."""
