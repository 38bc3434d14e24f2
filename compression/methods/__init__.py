"""One module per compression method; importing this package registers every method's config and
handler (image models in compression.core.registry, transformers in compression.methods.hf)."""
from compression.methods import (distillation, heads_ffn, hf, hf_distill, int8, lowrank, pruning,  # noqa: F401
                                 quantization)
