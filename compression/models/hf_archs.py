"""The transformer architectures this project loads, and where each keeps its blocks, attention
projections and FFN layers (the roles every transformer method and sweep works with)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArchSpec:
    """Where an architecture keeps its blocks and, inside a block, its attention and FFN layers.

    Paths are relative: `blocks` to the base model, the others to one block. `qkv` names one fused
    projection (GPT-2) instead of separate `q`, `k`, `v`. `head_attrs` are the attention module's
    attributes that count heads; `size_attrs` those that hold heads * head_dim.
    """

    blocks: str
    attention: str
    o: str
    ffn_in: str
    ffn_out: str
    q: str = ""
    k: str = ""
    v: str = ""
    qkv: str = ""
    head_attrs: tuple[str, ...] = ()
    size_attrs: tuple[str, ...] = ()


_BERT = ArchSpec(blocks="encoder.layer", attention="attention.self", q="attention.self.query",
                 k="attention.self.key", v="attention.self.value", o="attention.output.dense",
                 ffn_in="intermediate.dense", ffn_out="output.dense",
                 head_attrs=("num_attention_heads",), size_attrs=("all_head_size",))


ARCHS: dict[str, ArchSpec] = {
    "bert": _BERT,
    "roberta": _BERT,
    "distilbert": ArchSpec(blocks="transformer.layer", attention="attention", q="attention.q_lin",
                           k="attention.k_lin", v="attention.v_lin", o="attention.out_lin",
                           ffn_in="ffn.lin1", ffn_out="ffn.lin2", head_attrs=("n_heads",)),
    "gpt2": ArchSpec(blocks="h", attention="attn", qkv="attn.c_attn", o="attn.c_proj", ffn_in="mlp.c_fc",
                     ffn_out="mlp.c_proj", head_attrs=("num_heads",), size_attrs=("split_size",)),
}


DECODER_TYPES = ("gpt2",)


def supported() -> str:
    return ", ".join(sorted(ARCHS))
