"""The words the app uses, each in one or two plain sentences, for the Glossary page and for help
tooltips (`help_for`). Written for a reader who has trained a model but never compressed one."""
from __future__ import annotations

from urllib.parse import urlencode

GLOSSARY_PAGE = "glossary"  # the Glossary page's URL path (pages/glossary.py)

GLOSSARY: dict[str, str] = {
    "2:4 sparsity": "In every group of 4 neighbouring weights, exactly 2 are zero (50% sparsity in a fixed pattern). "
                    "Recent NVIDIA GPUs have sparse kernels that run this pattern faster; scattered zeros do not.",
    "accuracy": "The share of scored samples whose highest-scoring class is the true label (top-1 accuracy). "
                "Every page scores the same samples, so accuracies compare directly.",
    "activation quantization": "Rounding each layer's input (the activations), not only its weights. The range is "
                               "calibrated on training batches because inputs change with every sample.",
    "alpha (distillation)": "How the student's loss is split: alpha times the loss against the teacher's softened "
                            "probabilities plus (1 - alpha) times the ordinary loss against the true labels.",
    "baseline": "The model as loaded, before any compression. Every delta on every page is measured against it "
                "(or against the original when a compressed model has been kept).",
    "batch norm": "A layer that rescales each channel by a learned factor and shift using statistics from training. "
                  "It stays in fp32 here; its per-channel scales decide how much each channel of the conv before "
                  "it matters.",
    "batch norm folding": "Merging a batch norm's per-channel scale and shift into the convolution before it, so "
                          "the two become one conv with the same output: the usual step before int8 deployment.",
    "bit-width": "How many bits each stored number gets: 8 bits give 256 levels, 4 bits 16, 2 bits only 4. "
                 "Fewer bits = smaller model, coarser values.",
    "calibration": "Choosing a quantization grid's range (its scale and zero point) from the data or weights: "
                   "min-max takes the full range, percentile clips the extreme 0.01%, MSE picks the range with "
                   "the least squared rounding error.",
    "channel pruning": "Structured pruning that removes whole output channels (or neurons) and the inputs of the "
                       "next layer that read them, so the network really gets smaller and faster.",
    "clipping": "Values outside the chosen quantization range are set to the range's edge. Clipping a few "
                "outliers lets the grid spend its levels where most values are.",
    "conductance": "A captum importance score: how much of the model's score for the true class flows through "
                   "a layer's output, added up along a path from a blank input to the real one. High = the "
                   "decision depends on this layer.",
    "confusion matrix": "A table of true class (rows) against predicted class (columns); the diagonal holds the "
                        "correct predictions, everything else shows which classes get mixed up.",
    "cosine similarity": "How much two maps point the same way, from -1 to 1: 1 = the same pattern (whatever "
                         "the scale), 0 = unrelated.",
    "depthwise convolution": "A convolution that filters each channel on its own with one small kernel (a 3x3 "
                             "kernel is 9 weights per channel). Cheap, but each channel has very few weights "
                             "to lose.",
    "distillation": "Training a small student model to copy a large teacher's output probabilities, not only "
                    "the labels: the teacher's near-misses tell the student which classes look alike.",
    "energy kept": "For a low-rank layer, the share of the weight matrix's squared singular values that the kept "
                   "rank retains. 95% energy kept = the thin factors reproduce most of the matrix.",
    "fake quantization": "Simulated quantization: values are rounded to the low-bit grid but stored and computed "
                         "in fp32. It shows what the rounding does to accuracy, not the real size or speed.",
    "fine-tuning": "A few more epochs of training after compression (pruning masks and quantization grids fixed), "
                   "so the remaining weights make up for what was removed.",
    "fingerprint": "A short hash of a model's weights (or a data set's values) that identifies it: the same "
                   "fingerprint means the same numbers, so cached results and stored runs are matched by it.",
    "global pruning": "One magnitude threshold across all layers, so layers with many small weights lose more than "
                      "others; layer scope prunes every layer to the same sparsity instead.",
    "gradient x activation": "A layer's output times the gradient of the true class's score with respect to it: "
                             "large where an activation is both big and decisive.",
    "Hessian trace": "The sum of the loss's curvature over a layer's weights, estimated with random vectors "
                     "(Hutchinson's method). A high trace = a sharp loss, which rises fast when those weights move.",
    "Hessian per parameter": "The Hessian trace divided by the layer's number of weights: how sharp the loss is "
                             "per weight, so big and small layers compare fairly.",
    "int8 kernels": "Real int8: weights stored as 8-bit integers and multiplied by PyTorch's integer kernels. "
                    "This gives the real file size and speed (here on Linear layers; convolutions stay fp32).",
    "IQR": "Inter-quartile range: the spread of the middle half of repeated measurements (75th minus 25th "
           "percentile). A small IQR beside a latency means the timing was steady.",
    "KL divergence": "How far the compressed model's predicted probabilities are from the original's, averaged "
                     "over samples: 0 = identical predictions, larger = more different, even where the top class "
                     "is unchanged.",
    "kurtosis": "How heavy a distribution's tails are (excess kurtosis: 0 for a Gaussian). High kurtosis = a few "
                "weights far from the rest, which stretch a min-max quantization grid.",
    "latency": "The median time of one forward pass on a batch, after warm-up runs, on the chosen device. "
               "A compressed model is timed alongside the original, in alternating rounds.",
    "logits": "The model's raw class scores before the softmax turns them into probabilities.",
    "low-rank factorisation": "Replacing a weight matrix by the product of two thin matrices from its truncated "
                              "SVD: fewer parameters and MACs when the rank is small.",
    "MACs": "Multiply-accumulate operations for one input sample: a count of the compute work. Zeroed weights "
            "still count unless the layer is really made smaller (channel pruning, low-rank).",
    "magnitude pruning": "Removing the weights with the smallest absolute value, on the bet that they matter least.",
    "non-zero parameters": "Weights and biases that are not exactly zero: what pruning lowers. The stored "
                           "size only shrinks when the zeros are stored compactly or removed.",
    "OBD saliency": "Optimal Brain Damage (LeCun, 1990): half the sum of each weight squared times its Hessian "
                    "diagonal entry, the predicted rise in loss if the layer's weights were all removed.",
    "outlier fraction": "The share of a layer's weights more than 3 standard deviations from the mean: "
                        "a few of them are enough to stretch a quantization grid.",
    "Pareto front": "The results that no other result beats on both axes (smaller and more accurate): "
                    "the only ones worth choosing between.",
    "per-channel quantization": "One scale per output channel (per-tensor: one for the whole layer). Channels "
                                "with small weights then keep fine levels instead of sharing a wide grid.",
    "perplexity": "For a language model, the exponential of the mean next-token loss: roughly how many tokens it "
                  "hesitates between. Lower is better.",
    "proxy": "A cheap guess of a layer's sensitivity from weight statistics, curvature or importance, computed "
             "without the sweep. Read 'larger = more sensitive'.",
    "QAT": "Quantization-aware training: fine-tuning with fake quantization in the forward pass, so the weights "
           "learn to sit well on the low-bit grid. It helps most at 2-4 bits.",
    "residual shortcut": "A connection that adds a block's input to its output, so the signal has a bypass "
                         "around the block's layers: damage inside the block is partly routed around.",
    "sensitivity": "How much validation accuracy drops when only this layer is compressed, averaged over the "
                   "swept levels. A fragile layer drops a lot; a robust one barely moves.",
    "sparsity": "The fraction of weights that are zero. 90% sparsity keeps one weight in ten.",
    "Spearman rho": "A rank correlation from -1 to 1: +1 = the proxy orders the layers exactly as the sweep "
                    "measured, 0 = no relation. With few layers it can take only a few values.",
    "SQNR": "Signal-to-quantization-noise ratio in decibels: the weights' power over the rounding error's power. "
            "Each extra bit adds about 6 dB; higher = less noise.",
    "structured pruning": "Removing whole channels, neurons or attention heads, so tensors really get smaller; "
                          "unstructured pruning zeros single weights and keeps the shapes.",
    "symmetric quantization": "A grid centred on zero (no zero point). Asymmetric grids add a zero point so an "
                              "all-positive range, like inputs after a ReLU, uses every level.",
    "Taylor score": "A first-order estimate of how much the loss changes when a weight is removed: |weight x "
                    "gradient|, averaged over training batches.",
    "temperature": "Distillation divides the teacher's logits by T before the softmax. A higher T gives softer "
                   "probabilities that show which wrong classes look similar ('dark knowledge').",
    "top-1 agreement": "The share of samples on which the compressed model's top class equals the original's, "
                       "right or wrong: how faithfully it copies the original's decisions.",
    "unstructured pruning": "Zeroing single weights wherever they are small. The shapes stay the same, so the "
                            "model is only smaller or faster with sparse storage or kernels.",
}


def _key(term: str) -> str:
    """The glossary entry `term` names, matched without regard to case."""
    for key in GLOSSARY:
        if key.lower() == term.lower():
            return key
    raise KeyError(f"{term!r} is not in the glossary; add it to compression.core.glossary.GLOSSARY")


def define(term: str) -> str:
    """The plain definition of `term` (case-insensitive). Raises KeyError for an unknown term."""
    return GLOSSARY[_key(term)]


def help_for(*terms: str, note: str = "") -> str:
    """Help-tooltip text: `note` (what this number is here), then each term's definition, then a
    link to the Glossary page filtered on the first term. Raises KeyError for an unknown term.

    Example: help_for("SQNR") -> "**SQNR**: Signal-to-quantization-noise ... [Glossary](glossary?term=SQNR)"
    """
    keys = [_key(t) for t in terms]
    parts = [note.strip()] if note.strip() else []
    parts += [f"**{k}**: {GLOSSARY[k]}" for k in keys]
    query = "?" + urlencode({"term": keys[0]}) if keys else ""
    parts.append(f"More words explained on the [Glossary]({GLOSSARY_PAGE}{query}) page.")
    return "\n\n".join(parts)


def search(text: str = "") -> list[tuple[str, str]]:
    """(term, definition) pairs, alphabetic (case-insensitive), whose term or definition contains
    `text` (case-insensitive); every entry for an empty `text`."""
    needle = text.strip().lower()
    return [(k, v) for k, v in sorted(GLOSSARY.items(), key=lambda kv: kv[0].lower())
            if not needle or needle in k.lower() or needle in v.lower()]
