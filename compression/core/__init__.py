"""The bottom layer: errors, the method registry, devices, jobs, module helpers, quantization records."""
