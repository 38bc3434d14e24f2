"""Tiny random transformers saved into a folder, so the app, the CLI and the tests work offline
with no model files: a word-level tokenizer trained on the bundled sample sentences and a small
BERT (encoder or classifier) or GPT-2 (decoder) built from a config. Random weights: for trying
the methods, not for real-world numbers."""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import torch

from compression.core.errors import ConfigError
from compression.data.text import SAMPLE_PATH, read_lines
from compression.models.hf import KINDS, import_transformers, load_hf_folder
from compression.models.model import Model

BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
GPT_SPECIALS = ("[PAD]", "[UNK]", "<|endoftext|>")


def build_tokenizer(texts: list[str], decoder: bool = False):
    """A lower-casing word-level fast tokenizer over the words of `texts` (BERT-style [CLS] ... [SEP]
    framing for encoders; an end-of-text token for decoders)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

    tf = import_transformers()
    specials = GPT_SPECIALS if decoder else BERT_SPECIALS
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=list(specials)))
    if decoder:
        return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                          eos_token="<|endoftext|>", bos_token="<|endoftext|>")
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tf.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                      cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def demo_model(kind: str, vocab_size: int, hidden: int = 32, layers: int = 2, heads: int = 4,
               intermediate: int = 64, eos_id: int | None = None, seed: int = 0,
               init_std: float = 0.1) -> torch.nn.Module:
    """A seeded random BERT (encoder / classifier with labels negative, positive) or GPT-2 (decoder).
    Weights are drawn with std `init_std` (HF's default 0.02 leaves a random model's blocks so
    small next to the residual stream that no compression changes its outputs visibly)."""
    tf = import_transformers()
    torch.manual_seed(seed)
    if kind == "decoder":
        cfg = tf.GPT2Config(vocab_size=vocab_size, n_embd=hidden, n_layer=layers, n_head=heads, n_inner=intermediate,
                            n_positions=128, bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=0,
                            initializer_range=init_std)
        return tf.GPT2LMHeadModel(cfg).eval()
    cfg = tf.BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=intermediate, max_position_embeddings=128,
                        initializer_range=init_std)
    if kind == "classifier":
        cfg.id2label, cfg.label2id = {0: "negative", 1: "positive"}, {"negative": 0, "positive": 1}
        return tf.BertForSequenceClassification(cfg).eval()
    return tf.BertModel(cfg).eval()


def make_demo_folder(folder: str | Path, kind: str = "encoder", texts: list[str] | None = None,
                     **sizes) -> Path:
    """Write a tiny random transformer of `kind` and its tokenizer into `folder` (created).

    Args:
        texts: the tokenizer's vocabulary source; default: the bundled sample sentences.
        sizes: hidden, layers, heads, intermediate, seed (see `demo_model`).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}; got {kind!r}.")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(texts or read_lines(SAMPLE_PATH), decoder=kind == "decoder")
    eos = tokenizer.eos_token_id if kind == "decoder" else None
    model = demo_model(kind, len(tokenizer), eos_id=eos, **sizes)
    tokenizer.save_pretrained(folder)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def load_demo_text_model(kind: str) -> Model:
    """The tiny random transformer of `kind` (encoder, classifier, decoder), written to a temporary
    folder and loaded from it the way a user's folder is."""
    if kind not in KINDS:
        raise ConfigError(f"demo kind must be one of {', '.join(KINDS)}; got {kind!r}.")
    with tempfile.TemporaryDirectory(prefix="hf-demo-") as tmp:
        return dataclasses.replace(load_hf_folder(make_demo_folder(tmp, kind)), name=f"demo:{kind}")
