"""Text inputs that try to run code or exhaust the machine: Hugging Face folders asking for their own
Python code (auto_map), hostile config.json files and weight indexes, "billion laughs" and deeply
nested recipes, and non-positive CLI counts. Each is refused with a typed error (and, through the
CLI, exit status 2 and one 'error:' line), quickly, without reading stdin or allocating much."""
from __future__ import annotations

import argparse
import builtins
import io
import json
import resource
import runpy
import shutil
import sys
import time
from pathlib import Path

import pytest
import yaml

from compression.cli.transformers import check_counts
from compression.core.errors import ConfigError, ModelLoadError
from compression.models import hf as hf_loading
from compression.models import hf_checks
from compression.models.hf import load_hf_folder
from compression.models.hf_demo import make_demo_folder
from compression.workflows.recipes import RECIPE_MAX_BYTES, load_recipe
from tests.compression.cli.clitools import assert_one_line_error, run_cli

EVIL = """from pathlib import Path
Path({marker!r}).write_text("the folder's own code ran")


class EvilConfig:
    pass


class EvilModel:
    pass
"""


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory) -> Path:
    return make_demo_folder(tmp_path_factory.mktemp("hf") / "encoder", "encoder")


@pytest.fixture()
def folder(demo_folder, tmp_path) -> Path:
    """A fresh copy of the tiny demo encoder, to be made hostile by the test."""
    return Path(shutil.copytree(demo_folder, tmp_path / "model"))


@pytest.fixture()
def stdin_reads(monkeypatch, tmp_path) -> list[str]:
    """Every attempt to prompt or read standard input (which would answer 'y'), recorded; the
    Hugging Face caches pointed at tmp_path."""
    reads: list[str] = []

    class Recorder(io.StringIO):
        def read(self, *a):
            reads.append("stdin.read")
            return super().read(*a)

        def readline(self, *a):
            reads.append("stdin.readline")
            return super().readline(*a)

    def fake_input(prompt: str = "") -> str:
        reads.append(f"input({prompt[:60]!r})")
        return "y"

    monkeypatch.setattr(builtins, "input", fake_input)
    monkeypatch.setattr(sys, "stdin", Recorder("y\ny\ny\n"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf_modules"))
    return reads


def _edit_json(path: Path, **fields) -> None:
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def _plant_evil(folder: Path, tmp_path: Path) -> Path:
    """modeling_evil.py in the folder, writing a marker file when imported; returns the marker path."""
    marker = tmp_path / "marker.txt"
    (folder / "modeling_evil.py").write_text(EVIL.format(marker=str(marker)))
    return marker


def _modules_cached(tmp_path: Path) -> list[Path]:
    """Copies of the folder's modules in the tmp HF caches or transformers' own module cache."""
    import transformers.dynamic_module_utils as dyn

    roots = [tmp_path / "hf_home", tmp_path / "hf_modules", Path(dyn.HF_MODULES_CACHE)]
    return [p for root in roots if root.is_dir() for p in root.rglob("*evil*")]


def _no_transformers(monkeypatch) -> None:
    """Fail the test if the loader reaches transformers (a refusal must come first)."""
    def refuse():
        raise AssertionError("transformers was reached before the refusal")

    monkeypatch.setattr(hf_loading, "import_transformers", refuse)


# ---- remote code -------------------------------------------------------------------------------

def test_the_planted_module_really_has_a_side_effect(folder, tmp_path):
    marker = _plant_evil(folder, tmp_path)
    runpy.run_path(str(folder / "modeling_evil.py"))
    assert marker.is_file()  # so its absence below means it never ran


def test_auto_map_in_config_is_refused_before_transformers(folder, tmp_path, stdin_reads, monkeypatch, capsys):
    marker = _plant_evil(folder, tmp_path)
    _edit_json(folder / "config.json", auto_map={"AutoConfig": "modeling_evil.EvilConfig",
                                                 "AutoModel": "modeling_evil.EvilModel"})
    _no_transformers(monkeypatch)
    with pytest.raises(ModelLoadError, match=r"asks to run its own Python code \(auto_map in config.json\)"
                                             r".*modeling_evil\.py"):
        load_hf_folder(folder)
    assert_one_line_error(*run_cli(capsys, "hf", "--folder", str(folder), "--no-latency"),
                          "asks to run its own Python code")
    assert not marker.exists() and stdin_reads == [] and _modules_cached(tmp_path) == []


def test_auto_map_in_tokenizer_config_is_refused(folder, tmp_path, stdin_reads, monkeypatch):
    marker = _plant_evil(folder, tmp_path)
    _edit_json(folder / "tokenizer_config.json", auto_map={"AutoTokenizer": ["modeling_evil.EvilTokenizer", None]})
    _no_transformers(monkeypatch)
    with pytest.raises(ModelLoadError, match=r"auto_map in tokenizer_config.json.*modeling_evil\.py"):
        load_hf_folder(folder)
    assert not marker.exists() and stdin_reads == []


def test_without_our_check_transformers_still_runs_nothing_and_asks_nothing(folder, tmp_path, stdin_reads,
                                                                             monkeypatch):
    """Defence in depth: trust_remote_code=False reaches every from_pretrained, so even with the
    up-front refusal switched off the folder's code is not imported and nobody is asked."""
    tf = hf_loading.import_transformers()
    calls: list[tuple[str, dict]] = []
    for cls in (tf.AutoConfig, tf.AutoTokenizer, tf.AutoModel):
        original = cls.from_pretrained

        def spy(*args, _original=original, _name=cls.__name__, **kwargs):
            calls.append((_name, kwargs))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    monkeypatch.setattr(hf_checks, "check_no_remote_code", lambda folder, config: None)
    marker = _plant_evil(folder, tmp_path)
    _edit_json(folder / "config.json", auto_map={"AutoConfig": "modeling_evil.EvilConfig",
                                                 "AutoModel": "modeling_evil.EvilModel"})
    try:
        hf = load_hf_folder(folder)
        assert type(hf.model).__name__ == "BertModel"  # the built-in class, not the folder's
    except ModelLoadError:
        pass
    assert {name for name, _ in calls} == {"AutoConfig", "AutoTokenizer", "AutoModel"}
    assert all(kwargs.get("trust_remote_code") is False for _, kwargs in calls), calls
    assert not marker.exists() and stdin_reads == [] and _modules_cached(tmp_path) == []


def test_a_plain_folder_loads_without_reading_stdin(folder, stdin_reads):
    hf = load_hf_folder(folder)
    assert hf.task == "encoder" and stdin_reads == []


# ---- config.json -------------------------------------------------------------------------------

def test_oversized_config_is_refused_unread(folder, monkeypatch):
    _edit_json(folder / "config.json", notes="x" * (hf_checks.JSON_MAX_BYTES + 1))
    _no_transformers(monkeypatch)
    with pytest.raises(ModelLoadError, match="config.json is .* bytes, over the"):
        load_hf_folder(folder)


def test_deeply_nested_config_is_refused(folder, monkeypatch, capsys):
    (folder / "config.json").write_text('{"model_type": "bert", "x": ' + "[" * 200_000 + "]" * 200_000 + "}")
    _no_transformers(monkeypatch)
    with pytest.raises(ModelLoadError, match="nests deeper than 64 levels"):
        load_hf_folder(folder)
    assert_one_line_error(*run_cli(capsys, "hf", "--folder", str(folder), "--no-latency"), "nests deeper")


def test_brackets_inside_strings_do_not_count_as_nesting(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"note": "[{" * 1000 + '\\"\\\\', "ok": [[1]]}))
    assert hf_checks.read_json_file(path)["ok"] == [[1]]


def test_depth_scan_is_linear_on_escaped_quotes(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"a": "' + '\\"' * 400_000 + '"}')  # quadratic for a string-matching regex
    start = time.perf_counter()
    assert len(hf_checks.read_json_file(path)["a"]) == 400_000
    assert time.perf_counter() - start < 2


def test_json_that_still_recurses_too_deep_is_a_typed_error(tmp_path, monkeypatch):
    """The depth scan runs first; should json.loads still overflow the stack, that is typed too."""
    monkeypatch.setattr(hf_checks, "_check_json_depth", lambda text, name: None)
    path = tmp_path / "config.json"
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ModelLoadError, match="Cannot read"):
        hf_checks.read_json_file(path)


@pytest.mark.parametrize("fields, match", [
    ({"num_attention_heads": 0}, "num_attention_heads must be a positive integer"),
    ({"hidden_size": "768"}, r"hidden_size must be a positive integer; got '768' \(str\)"),
    ({"num_hidden_layers": -2}, "num_hidden_layers must be a positive integer"),
    ({"vocab_size": 1.5}, "vocab_size must be a positive integer"),
    ({"intermediate_size": True}, "intermediate_size must be a positive integer"),
    ({"hidden_size": 30}, "hidden_size = 30 is not a multiple of num_attention_heads = 4"),
    ({"vocab_size": 50_000_000, "hidden_size": 4096}, r"vocab_size=50,000,000, hidden_size=4,096.*over the 4 GiB"),
    ({"num_hidden_layers": 10**6}, r"num_hidden_layers=1,000,000.*over the 4 GiB"),
    ({"max_position_embeddings": 10**12}, r"max_position_embeddings=1,000,000,000,000"),
    ({"num_labels": 10**9}, "num_labels = 1,000,000,000 is over"),
    ({"pad_token_id": 10**9}, "pad_token_id must be a token id below vocab_size"),
    ({"model_type": ["bert"]}, "model_type must be a string"),
    ({"architectures": "BertModel"}, "architectures must be a list"),
    ({"id2label": ["a", "b"]}, "id2label must map"),
    ({"dtype": "evil"}, "dtype must be one of"),
    ({"quantization_config": {"quant_method": "bitsandbytes"}}, "quantization_config"),
])
def test_bad_config_fields_are_refused_before_transformers(folder, monkeypatch, fields, match):
    _edit_json(folder / "config.json", **fields)
    _no_transformers(monkeypatch)
    with pytest.raises(ModelLoadError, match=match):
        load_hf_folder(folder)


def test_absurd_sizes_allocate_nothing_and_fail_one_line(folder, capsys):
    _edit_json(folder / "config.json", vocab_size=10**9, hidden_size=8192)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert_one_line_error(*run_cli(capsys, "hf", "--folder", str(folder), "--no-latency"),
                          "billion parameters (vocab_size=1,000,000,000")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KiB


def test_transformers_field_errors_are_typed(folder):
    _edit_json(folder / "config.json", layer_norm_eps="tiny")  # transformers' own check, not ours
    with pytest.raises(ModelLoadError, match="layer_norm_eps"):
        load_hf_folder(folder)


# ---- weight indexes ----------------------------------------------------------------------------

def _index(folder: Path, name: str, files: list[str]) -> None:
    weight_map = {f"layer{i}.weight": f for i, f in enumerate(files)}
    (folder / name).write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


@pytest.mark.parametrize("files, match", [
    (["model-00001.safetensors", "pytorch_model-00002.bin"], "points at pickle weights"),
    (["model.pt"], "points at pickle weights"),
    (["../elsewhere.safetensors"], "only name .safetensors files inside"),
    (["model-00001.npz"], "only name .safetensors files inside"),
])
def test_safetensors_index_naming_other_files_is_refused(folder, monkeypatch, capsys, files, match):
    _index(folder, "model.safetensors.index.json", files)
    _no_transformers(monkeypatch)
    with pytest.raises(ModelLoadError, match=match):
        load_hf_folder(folder)
    assert_one_line_error(*run_cli(capsys, "hf", "--folder", str(folder)), match)


def test_pickle_index_is_refused_unread(folder, monkeypatch):
    (folder / "model.safetensors").unlink()
    _index(folder, "pytorch_model.bin.index.json", ["pytorch_model-00001.bin"])
    (folder / "pytorch_model-00001.bin").write_bytes(b"never opened")
    _no_transformers(monkeypatch)
    with pytest.raises(ModelLoadError, match="pytorch_model.bin.index.json points at pickle weights"):
        load_hf_folder(folder)


# ---- CLI counts --------------------------------------------------------------------------------

@pytest.mark.parametrize("flag, value", [("--batch-size", "0"), ("--batch-size", "-4"), ("--seq-len", "0"),
                                         ("--max-texts", "-1"), ("--epochs", "-1"), ("--batch-size", "100000")])
def test_non_positive_or_huge_counts_are_one_line_errors(capsys, flag, value):
    assert_one_line_error(*run_cli(capsys, "hf", "--folder", "demo:encoder", flag, value), f"error: {flag} must be")


def test_counts_check_is_typed():
    args = argparse.Namespace(max_texts=8, batch_size=0, seq_len=32, epochs=3, target=0.99)
    with pytest.raises(ConfigError, match="--batch-size must be a whole number from 1"):
        check_counts(args)
    with pytest.raises(ConfigError, match="--target must be a fidelity"):
        check_counts(argparse.Namespace(max_texts=8, batch_size=8, seq_len=32, epochs=3, target=float("nan")))


# ---- recipes -----------------------------------------------------------------------------------

def billion_laughs(levels: int = 9) -> str:
    """Nine anchored lists, each of nine aliases of the one before: 9**9 values once expanded."""
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines + [f"name: *a{levels - 1}", f"steps: [*a{levels - 1}]"]) + "\n"


def _refused_quickly(source, match: str) -> None:
    before, start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    with pytest.raises(ConfigError, match=match) as info:
        load_recipe(source)
    assert time.perf_counter() - start < 2
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 32 * 1024  # KiB
    assert "\n" not in str(info.value) and len(str(info.value)) < 400


@pytest.mark.parametrize("pure_python", [False, True])
def test_billion_laughs_is_refused_fast_and_small(tmp_path, monkeypatch, capsys, pure_python):
    if pure_python:  # PyYAML without libyaml
        monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    path = tmp_path / "laughs.yaml"
    path.write_text(billion_laughs())
    _refused_quickly(path, "aliases expand to more than")
    _refused_quickly(billion_laughs(), "aliases expand to more than")
    assert_one_line_error(*run_cli(capsys, "run", str(path), "--model", "demo:student"), "refused unread")


def test_many_small_aliases_are_refused_too():
    steps = ", ".join(["*s"] * 200)
    _refused_quickly(f"steps: [&s {{kind: finetune, epochs: 1}}, {steps}]", "more than 100 aliases")


def test_a_few_aliases_still_work():
    recipe = load_recipe("steps:\n  - &step {kind: finetune, epochs: 1}\n  - *step\n")
    assert [s["epochs"] for s in recipe.steps] == [1, 1]


@pytest.mark.parametrize("pure_python", [False, True])
@pytest.mark.parametrize("text", [
    "[" * 100_000 + "]" * 100_000,  # JSON
    '{"steps": ' + '{"a": ' * 10_000 + "1" + "}" * 10_001,  # JSON objects
    "".join(" " * i + "- \n" for i in range(1_000)) + " " * 1_000 + "- x\n",  # YAML block sequences
])
def test_deeply_nested_recipe_is_a_one_line_config_error(tmp_path, monkeypatch, capsys, text, pure_python):
    if pure_python:
        monkeypatch.delattr(yaml, "CSafeLoader", raising=False)
    _refused_quickly(text, "nests|not valid YAML")
    path = tmp_path / "deep.json"
    path.write_text(text)
    assert_one_line_error(*run_cli(capsys, "run", str(path), "--model", "demo:student"), "error: The recipe")


def test_oversized_recipe_is_refused_unread(tmp_path, capsys):
    path = tmp_path / "big.yaml"
    path.write_text("steps: [{kind: finetune, epochs: 1}]\n# " + "x" * RECIPE_MAX_BYTES + "\n")
    _refused_quickly(path, "bytes, over the")
    _refused_quickly(path.read_text(), "characters, over the")
    assert_one_line_error(*run_cli(capsys, "run", str(path), "--model", "demo:student"), "bytes, over the")


@pytest.mark.parametrize("recipe, match", [
    ({"version": list(range(50_000)), "steps": [{"kind": "finetune"}]}, "Recipe version"),
    ({"steps": [{"kind": "finetune", "epochs": ["x" * 10_000] * 1000}]}, "epochs must be of type int"),
    ({"steps": [{"kind": "x" * 100_000}]}, "unknown step kind"),
])
def test_error_messages_stay_short(recipe, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_recipe(recipe)
    assert len(str(info.value)) < 600
