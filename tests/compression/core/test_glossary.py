"""The glossary covers every term a help tooltip names, and the layer notes state a layer's facts
(its weight count, share and position, shortcuts around it) as the model has them."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from compression.models import zoo
from compression.core.errors import ConfigError
from compression.core.glossary import GLOSSARY, define, help_for, search
from compression.analysis.layer_notes import bypassed, forward_order, layer_facts, why_sensitive

ROOT = Path(__file__).resolve().parents[3]
SOURCES = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py")), *sorted((ROOT / "ui").glob("*.py"))]
ASKED_FOR = ["SQNR", "KL divergence", "top-1 agreement", "MACs", "IQR", "kurtosis", "conductance", "OBD saliency",
             "Spearman rho", "sparsity", "2:4 sparsity", "per-channel quantization", "calibration",
             "fake quantization", "int8 kernels", "energy kept", "temperature", "Hessian trace", "Taylor score",
             "fingerprint", "residual shortcut", "depthwise convolution", "batch norm folding"]


def terms_used_in_sources() -> list[tuple[str, str]]:
    """(file, term) for every string literal passed to help_for, and every value of a module-level
    *_TERMS dict (the pages map columns and methods to glossary terms that way)."""
    found = []
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "help_for":
                found += [(path.name, a.value) for a in node.args if isinstance(a, ast.Constant)]
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "").endswith("_TERMS") for t in node.targets):
                found += [(path.name, v.value) for v in node.value.values if isinstance(v, ast.Constant)]
    return found


def test_every_term_a_page_asks_for_is_defined():
    used = terms_used_in_sources()
    assert len(used) >= 15 and {f for f, _ in used} >= {"widgets.py", "sensitivity.py"}  # the scan finds them
    missing = [(f, t) for f, t in used if t.lower() not in {k.lower() for k in GLOSSARY}]
    assert not missing, missing


@pytest.mark.parametrize("term", ASKED_FOR)
def test_the_jargon_named_in_the_issue_is_explained(term):
    text = define(term)
    assert 40 < len(text) < 330 and text.endswith(".")     # one or two plain sentences
    assert text.count(". ") <= 2


def test_help_for_defines_then_points_to_the_glossary():
    text = help_for("sqnr", note="Per layer, in dB.")
    assert text.startswith("Per layer, in dB.") and "**SQNR**: Signal-to-quantization-noise" in text
    assert text.endswith("[Glossary](glossary?term=SQNR) page.")
    two = help_for("top-1 agreement", "KL divergence")
    assert two.index("**top-1 agreement**") < two.index("**KL divergence**") < two.index("[Glossary]")
    assert "term=top-1+agreement" in two
    with pytest.raises(KeyError, match="not in the glossary"):
        help_for("flux capacitor")


def test_search_is_alphabetic_and_filters_terms_and_meanings():
    terms = [t for t, _ in search()]
    assert len(terms) == len(GLOSSARY) and terms == sorted(terms, key=str.lower)
    assert [t for t, _ in search("sqnr")] == ["SQNR"]
    assert "kurtosis" in [t for t, _ in search("heavy")]     # a word of the explanation only
    assert search("no such word anywhere") == []


def test_library_modules_do_not_import_streamlit():
    code = "import sys, compression.core.glossary, compression.analysis.layer_notes; assert 'streamlit' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


# ---- layer notes ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def resnet() -> torch.nn.Module:
    return zoo.load_pretrained("resnet")


def test_resnet_stem_is_first_small_and_not_bypassed(resnet):
    stem = resnet.get_submodule("stem.0")
    total = sum(p.numel() for p in resnet.parameters())
    text = why_sensitive(resnet, "stem.0", "most")
    assert stem.weight.numel() == 144 and "it has 144 weights" in text
    assert f"{144 / total:.2%} of the model's {total:,} parameters" in text
    assert "first layer" in text and "raw pixels" in text
    assert "no residual shortcut runs around it" in text
    fragile = text.split("What makes it fragile:")[1]
    assert "144 weights" in fragile and "first layer" in fragile     # the facts that agree with the verdict


def test_resnet_fc_is_the_last_layer_and_makes_the_decision(resnet):
    text = why_sensitive(resnet, "fc")
    assert "640 weights and 10 biases" in text
    assert "last layer" in text and "64 features into the 10 class scores" in text
    assert "first layer" not in text


def test_shortcuts_give_the_block_layers_a_bypass(resnet):
    assert forward_order(resnet)[0] == "stem.0" and forward_order(resnet)[-1] == "fc"
    assert bypassed(resnet, "layers.0.conv1") is True and bypassed(resnet, "layers.1.shortcut.0") is True
    assert bypassed(resnet, "stem.0") is False and bypassed(resnet, "fc") is False
    text = why_sensitive(resnet, "layers.0.conv1", "least")
    robust = text.split("What makes it robust:")[1].split("\n\n")[0]
    assert "bypass" in robust
    assert "shortcut projection" in why_sensitive(resnet, "layers.1.shortcut.0")


def test_depthwise_and_plain_models():
    mobilenet = zoo.load_pretrained("mobilenet")
    assert "depthwise 3×3 conv" in why_sensitive(mobilenet, "features.1.0") and "only 9 weights" in \
        why_sensitive(mobilenet, "features.1.0")
    mlp = zoo.load_pretrained("mlp")
    assert bypassed(mlp, "fc2") is None                     # no residual additions: no shortcut fact at all
    assert {f.topic for f in layer_facts(mlp, "fc2")} == {"size", "position", "shape"}
    assert "59.5% of the model's 50,610 parameters" in why_sensitive(mlp, "fc2", "least")


def test_notes_on_torchscript_and_pruned_models():
    scripted = torch.jit.script(zoo.load_pretrained("mlp"))
    text = why_sensitive(scripted, "fc1", "most")           # fx cannot trace it: module order instead
    assert "first layer" in text and "19,200 weights" in text
    mlp = zoo.load_pretrained("mlp")
    with torch.no_grad():
        mlp.fc3.weight[:, :50] = 0
    assert "(500 of them already zero)" in why_sensitive(mlp, "fc3")


def test_unknown_or_weightless_layer_is_a_config_error(resnet):
    with pytest.raises(ConfigError):
        why_sensitive(resnet, "nope")
    with pytest.raises(ConfigError):
        why_sensitive(resnet, "stem.1")                     # a batch norm: not a swept layer
