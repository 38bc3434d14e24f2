"""Per-layer sensitivity, proxies, allocation, attribution."""
