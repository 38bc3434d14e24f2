"""Transformer support: loading local folders, text data, fidelity metrics and every method, on tiny
random BERT / GPT-2 models saved into tmp folders (no download, no network)."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from compression.analysis.hf import METHOD_CONFIGS, choose_int8, int8_tradeoff, measure_method, sensitivity_by_group, sensitivity_sweep
from compression.cli import main
from compression.core.errors import ConfigError, DataError, ModelDataMismatch, ModelLoadError, UnsupportedLayerError
from compression.core.registry import compress, config_from_dict
from compression.data.text import TextData, encode, load_text_bytes, load_text_data
from compression.io.hf_export import hf_zip_bytes
from compression.methods.heads_ffn import FFNPruneConfig, HeadPruneConfig
from compression.methods.hf import HFLowRankConfig, HFPruneConfig, HFQuantConfig, Int8Config, NMConfig, nm_mask
from compression.methods.hf_distill import HFDistillConfig, distill_hf
from compression.metrics.text import fidelity, make_probe, model_outputs, neighbour_agreement
from compression.models.hf import KINDS, load_hf_folder, model_kind
from compression.models.hf_demo import build_tokenizer, make_demo_folder
from compression.models.model import Model, linear_names

MAX_TEXTS = 32


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf")
    return {kind: make_demo_folder(root / kind, kind) for kind in KINDS}


@pytest.fixture(scope="module")
def models(folders) -> dict[str, Model]:
    return {kind: load_hf_folder(path) for kind, path in folders.items()}


@pytest.fixture(scope="module")
def data() -> TextData:
    return load_text_data(None)


def _fid(hf: Model, other: Model, data: TextData) -> dict:
    return fidelity(hf, other, data, max_texts=MAX_TEXTS)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], v) for k, v in before.items())


# ---- loading ----------------------------------------------------------------------------------

def test_loads_each_kind(models):
    assert type(models["encoder"].model).__name__ == "BertModel"
    assert type(models["classifier"].model).__name__ == "BertForSequenceClassification"
    assert type(models["decoder"].model).__name__ == "GPT2LMHeadModel"
    for kind, hf in models.items():
        assert hf.task == kind and not hf.model.training
        assert hf.summary["layers"] == 2 and hf.summary["heads"] == 4
        assert hf.summary["vocab_size"] >= len(hf.tokenizer)


def test_gpt2_conv1d_becomes_linear_with_the_same_outputs(models, folders):
    tf = pytest.importorskip("transformers")
    reference = tf.AutoModelForCausalLM.from_pretrained(folders["decoder"], local_files_only=True).eval()
    assert not any(type(m).__name__ == "Conv1D" for m in models["decoder"].model.modules())
    ids = torch.arange(1, 17)[None]
    with torch.inference_mode():
        ours, theirs = models["decoder"].model(input_ids=ids).logits, reference(input_ids=ids).logits
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_kind_from_config(models):
    config = copy.deepcopy(models["encoder"].model.config)
    config.architectures = None
    config.id2label = {0: "negative", 1: "positive"}
    assert model_kind(config) == "classifier"
    config.id2label = {0: "LABEL_0", 1: "LABEL_1"}
    assert model_kind(config) == "encoder"
    assert model_kind(models["decoder"].model.config) == "decoder"


def _copy_folder(src: Path, dst: Path, drop: tuple[str, ...] = ()) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        if f.name not in drop:
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_folder_without_weights(folders, tmp_path):
    folder = _copy_folder(folders["encoder"], tmp_path / "m", drop=("model.safetensors",))
    with pytest.raises(ModelLoadError, match="No weights"):
        load_hf_folder(folder)


def test_folder_without_config(folders, tmp_path):
    folder = _copy_folder(folders["encoder"], tmp_path / "m", drop=("config.json",))
    with pytest.raises(ModelLoadError, match="No config.json"):
        load_hf_folder(folder)


def test_pickle_only_checkpoint_is_refused_unread(folders, tmp_path):
    folder = _copy_folder(folders["encoder"], tmp_path / "m", drop=("model.safetensors",))
    (folder / "pytorch_model.bin").write_bytes(b"not even a pickle")  # never opened
    with pytest.raises(ModelLoadError, match="pickle"):
        load_hf_folder(folder)


def test_unsupported_architecture_lists_the_supported(folders, tmp_path):
    folder = _copy_folder(folders["encoder"], tmp_path / "m")
    (folder / "config.json").write_text(json.dumps({"model_type": "t5", "architectures": ["T5Model"]}))
    with pytest.raises(ModelLoadError, match="Unsupported architecture 't5'.*bert, distilbert, gpt2, roberta"):
        load_hf_folder(folder)


def test_tokenizer_mismatch(folders, tmp_path):
    folder = _copy_folder(folders["encoder"], tmp_path / "m", drop=("model.safetensors", "config.json"))
    tf = pytest.importorskip("transformers")
    small = tf.BertModel(tf.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=4, intermediate_size=64))
    small.save_pretrained(folder)
    with pytest.raises(ModelLoadError, match="Tokenizer mismatch"):
        load_hf_folder(folder)


def test_missing_tokenizer_and_missing_folder(folders, tmp_path):
    folder = _copy_folder(folders["encoder"], tmp_path / "m", drop=("tokenizer.json", "tokenizer_config.json"))
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load_hf_folder(folder)
    with pytest.raises(ModelLoadError, match="not a folder"):
        load_hf_folder(tmp_path / "nowhere")


def test_importing_the_api_does_not_import_transformers():
    code = ("import sys, compression.analysis.hf, compression.cli.transformers, compression.methods.hf_distill; "
            "assert 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[3])


# ---- text data --------------------------------------------------------------------------------

def test_default_sample_and_files(data, tmp_path):
    assert len(data) >= 150 and data.labels is None
    txt = tmp_path / "a.txt"
    txt.write_text("first text\n\n second text \n", encoding="utf-8")
    assert load_text_data(txt).texts == ("first text", "second text")
    csv = tmp_path / "b.csv"
    csv.write_text("Text,label\n\"hello, world\",1\nbye,0\n", encoding="utf-8")
    loaded = load_text_data(csv)
    assert loaded.texts == ("hello, world", "bye") and loaded.labels == (1, 0)


@pytest.mark.parametrize("name, raw, match", [
    ("e.txt", b"  \n\n", "empty"),
    ("e.csv", b"", "empty"),
    ("h.csv", b"text,label\n", "no text"),
    ("c.csv", b"sentence,label\nhi,1\n", "no 'text' column"),
    ("u.txt", "caf\u00e9".encode("latin-1"), "not UTF-8"),
    ("l.csv", b"text,label\nhi,positive\n", "not an integer"),
    ("n.csv", b"text,label\nhi,-1\n", "non-negative"),
])
def test_bad_text_files(tmp_path, name, raw, match):
    path = tmp_path / name
    path.write_bytes(raw)
    with pytest.raises(DataError, match=match):
        load_text_data(path)


def test_missing_text_file(tmp_path):
    with pytest.raises(DataError, match="No text file"):
        load_text_data(tmp_path / "missing.txt")


# ---- metrics ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_uncompressed_copy_has_fidelity_exactly_one(models, data, kind):
    hf = models[kind]
    result = _fid(hf, hf.replace(copy.deepcopy(hf.model), "copy"), data)
    assert result["fidelity"] == 1.0 and result["cosine"] == 1.0
    if kind == "encoder":
        assert result["neighbour_agreement"] == 1.0 and result["mse"] == 0.0
    else:
        assert result["agreement"] == 1.0 and result["kl_divergence"] == 0.0
    if kind == "decoder":
        assert result["perplexity"] == result["perplexity_original"] > 1


def test_accuracy_with_labels(models):
    data = load_text_bytes("l.csv", b"text,label\ngood film,1\nbad film,0\nfine,1\n")
    result = _fid(models["classifier"], models["classifier"], data)
    assert 0.0 <= result["accuracy"] == result["accuracy_original"] <= 1.0
    too_many = load_text_bytes("l.csv", b"text,label\ngood film,5\n")
    with pytest.raises(ModelDataMismatch, match="2 classes"):
        _fid(models["classifier"], models["classifier"], too_many)


@pytest.mark.parametrize("kind, key", [("encoder", "cosine"), ("decoder", "agreement")])
def test_fidelity_drops_as_compression_grows(models, data, kind, key):
    hf = models[kind]
    light, _ = compress(hf, HFPruneConfig(sparsity=0.3))
    heavy, _ = compress(hf, HFPruneConfig(sparsity=0.8))
    assert 1.0 > _fid(hf, light, data)[key] > _fid(hf, heavy, data)[key]
    q8, _ = compress(hf, HFQuantConfig(bits=8))
    q2, _ = compress(hf, HFQuantConfig(bits=2))
    assert _fid(hf, q8, data)[key] > _fid(hf, q2, data)[key]


def test_neighbour_agreement_reference():
    a = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    assert neighbour_agreement(a, a, k=1) == 1.0
    assert neighbour_agreement(a, a[[2, 3, 0, 1]], k=1) == 1.0  # the same pairs: {0, 1}, {2, 3}
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])  # pairs {0, 2}, {1, 3}
    assert neighbour_agreement(a, b, k=1) == 0.0
    assert neighbour_agreement(a, b, k=3) == 1.0  # everyone else is a neighbour


# ---- methods ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", sorted(METHOD_CONFIGS))
def test_every_method_runs_and_leaves_the_input_untouched(models, data, kind, method):
    hf = models[kind]
    before = _state(hf.model)
    small, report = compress(hf, METHOD_CONFIGS[method]())
    assert small.model is not hf.model and _same_state(hf.model, before)
    assert report.method == METHOD_CONFIGS[method].kind
    result = _fid(hf, small, data)
    assert 0.0 < result["fidelity"] <= 1.0
    assert not any(hasattr(m, "weight_orig") for m in small.model.modules())  # masks folded


def test_unstructured_pruning_sparsity_and_embeddings(models):
    hf = models["decoder"]
    small, report = compress(hf, HFPruneConfig(sparsity=0.6))
    for name in linear_names(small.model):
        w = small.model.get_submodule(name).weight
        assert abs((w == 0).float().mean().item() - 0.6) < 0.01, name
    wte = small.model.get_submodule("transformer.wte").weight
    assert torch.equal(wte, hf.model.get_submodule("transformer.wte").weight)  # embedding (and tied head) kept
    assert ("lm_head", "in the exclude list") in report.skipped
    with_emb, _ = compress(hf, HFPruneConfig(sparsity=0.6, embeddings=True))
    assert (with_emb.model.get_submodule("transformer.wte").weight == 0).float().mean() > 0.55


def test_nm_gives_exactly_n_nonzeros_per_group_of_m(models):
    hf = models["encoder"]
    small, report = compress(hf, NMConfig(n=2, m=4))
    assert len(report.layers) == len(linear_names(hf.model))
    for name in linear_names(small.model):
        w = small.model.get_submodule(name).weight  # (out, in)
        groups = (w != 0).reshape(w.shape[0], -1, 4).sum(-1)
        assert torch.all(groups == 2), name
    mask = nm_mask(torch.tensor([[0.1, -5.0, 3.0, 0.2, 1.0, 2.0, -3.0, 4.0]]))
    assert mask.tolist() == [[0, 1, 1, 0, 0, 0, 1, 1]]


def _zero_heads_reference(hf: Model, removed: dict[int, list[int]]) -> nn.Module:
    """Removing a head = zeroing its columns of the attention output projection."""
    ref = copy.deepcopy(hf.model)
    for index, (prefix, block) in enumerate(hf.replace(ref, "ref").blocks()):
        o = block.get_submodule(hf.spec.o)
        d = o.in_features // hf.summary["heads"]
        with torch.no_grad():
            for h in removed[index]:
                o.weight[:, h * d:(h + 1) * d] = 0
    return ref


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_head_pruning_shrinks_and_equals_zeroing_those_heads(models, data, kind):
    hf = models[kind]
    small, report = compress(hf, HeadPruneConfig(fraction=0.5))
    assert report.metrics["params_after"] < report.metrics["params_before"]
    assert all(row["heads_after"] == 2 for row in report.layers)
    removed = {row["block"]: row["removed"] for row in report.layers}
    reference = _zero_heads_reference(hf, removed)
    enc = encode(hf.tokenizer, data, max_texts=8)
    ours = model_outputs(small.model, kind, enc).values[0]
    theirs = model_outputs(reference, kind, enc).values[0]
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["distilbert", "roberta"])
def test_other_architectures_load_and_prune_heads(tmp_path, data, arch):
    tf = pytest.importorskip("transformers")
    tokenizer = build_tokenizer(list(data.texts[:50]))
    if arch == "distilbert":
        model = tf.DistilBertModel(tf.DistilBertConfig(vocab_size=len(tokenizer), dim=32, n_layers=2, n_heads=4,
                                                       hidden_dim=64, initializer_range=0.1))
    else:
        model = tf.RobertaModel(tf.RobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=4, intermediate_size=64, pad_token_id=0,
                                                 initializer_range=0.1))
    tokenizer.save_pretrained(tmp_path)
    model.save_pretrained(tmp_path)
    hf = load_hf_folder(tmp_path)
    assert hf.task == "encoder" and hf.model_type == arch
    small, report = compress(hf, HeadPruneConfig(fraction=0.5))
    assert report.metrics["params_after"] < report.metrics["params_before"]
    reference = _zero_heads_reference(hf, {row["block"]: row["removed"] for row in report.layers})
    enc = encode(hf.tokenizer, data, max_texts=8)
    torch.testing.assert_close(model_outputs(small.model, "encoder", enc).values[0],
                               model_outputs(reference, "encoder", enc).values[0], atol=1e-4, rtol=1e-4)


def test_ffn_pruning_shrinks_and_still_runs(models, data):
    hf = models["classifier"]
    small, report = compress(hf, FFNPruneConfig(fraction=0.5))
    assert all(row["neurons_after"] == 32 for row in report.layers)
    assert report.metrics["params_after"] < report.metrics["params_before"]
    assert small.model.bert.encoder.layer[0].intermediate.dense.out_features == 32
    assert _fid(hf, small, data)["fidelity"] > 0


def test_int8_is_really_int8(models, data):
    from torch.ao.nn.quantized.dynamic import Linear as DynLinear

    hf = models["decoder"]
    small, report = compress(hf, Int8Config(exclude=("lm_head",)))
    dyn = {n: m for n, m in small.model.named_modules() if isinstance(m, DynLinear)}
    assert len(dyn) == len(linear_names(hf.model, tied=True)) - 1 and "lm_head" not in dyn
    assert all(m.weight().dtype == torch.qint8 for m in dyn.values())
    assert report.metrics["simulated"] is False and _fid(hf, small, data)["agreement"] > 0.5


def test_simulated_quantization_levels(models):
    hf = models["encoder"]
    small, report = compress(hf, HFQuantConfig(bits=3))
    for name in linear_names(small.model) + ["embeddings.word_embeddings"]:
        w = small.model.get_submodule(name).weight
        assert max(len(torch.unique(row)) for row in w) <= 2 ** 3, name
    assert "embeddings.word_embeddings" in {r["layer"] for r in report.layers}


def test_lowrank_shrinks_and_runs(models, data):
    hf = models["encoder"]
    small, report = compress(hf, HFLowRankConfig(rank_ratio=0.25))
    assert report.metrics["params_after"] < report.metrics["params_before"]
    assert _fid(hf, small, data)["cosine"] > 0


def test_transformer_presets_run_the_methods_every_model_gets(models):
    """hf_lowrank and hf_int8 are the generic lowrank and real int8 on a text model's layers, not copies."""
    hf = models["decoder"]
    _, lr = compress(hf, HFLowRankConfig(rank_ratio=0.25))
    assert lr.method == "hf_lowrank" and lr.layers and all("energy_kept" in row for row in lr.layers)
    assert "lm_head" in dict(lr.skipped) and "lm_head" not in {row["layer"] for row in lr.layers}  # tied head
    _, q = compress(hf, Int8Config())
    assert q.method == "hf_int8" and q.metrics["int8_file_bytes"] < q.metrics["fp32_file_bytes"]


def test_configs_round_trip_and_validate():
    for cls in METHOD_CONFIGS.values():
        cfg = cls()
        assert config_from_dict(json.loads(cfg.to_json())) == cfg
    for bad in (lambda: HFPruneConfig(sparsity=1.5), lambda: NMConfig(n=4, m=4),
                lambda: HFQuantConfig(bits=1), lambda: HeadPruneConfig(fraction=-0.1),
                lambda: config_from_dict({"kind": "nope"})):
        with pytest.raises(ConfigError):
            bad()


def test_measure_method_reports_latency(models, data):
    _, result = measure_method(models["encoder"], HFQuantConfig(bits=4), data, repeats=3,
                                  probe=make_probe(models["encoder"], data, max_texts=MAX_TEXTS))
    assert result["latency_before_ms"] > 0 and result["latency_after_ms"] > 0 and result["speedup"] > 0
    assert result["latency_batch"] == 8 and result["latency_seq_len"] == 32 and result["fidelity"] < 1.0


# ---- sweeps, int8 trade-off, distillation -------------------------------------------------------

def test_sensitivity_sweep_grouped_by_block(models, data):
    hf = models["encoder"]
    seen = []
    frame = sensitivity_sweep(hf, data, "quantize", (8, 2), max_texts=16, callback=lambda d, t, r: seen.append(d))
    assert len(frame) == 2 * len(linear_names(hf.model)) == len(seen)
    assert {"attention.q", "attention.k", "attention.v", "attention.o", "ffn.in", "ffn.out"} <= set(frame["group"])
    groups = sensitivity_by_group(frame).set_index(["group", "level"])
    assert (groups.xs(8, level="level")["fidelity_mean"] >= groups.xs(2, level="level")["fidelity_mean"]).all()
    stopped = sensitivity_sweep(hf, data, "prune", (0.5,), max_texts=8, stop=lambda: True)
    assert stopped.empty and stopped.attrs["stopped"]


def test_int8_tradeoff_and_target(models, data):
    hf = models["decoder"]
    frame = int8_tradeoff(hf, data, ks=(0, 3, 9), max_texts=16, repeats=2)
    assert list(frame["k_kept"]) == [0, 3, 9] and frame["fidelity"].iloc[-1] == 1.0
    assert frame["int8_layers"].tolist() == [9, 6, 0] and (frame["speedup"] > 0).all()
    assert len(frame.attrs["sensitivity"]) == 9
    choice = choose_int8(frame, target=1.0)
    assert choice["meets_target"] and choice["fidelity"] == 1.0
    assert choose_int8(frame, target=0.0)["speedup"] == frame["speedup"].max()


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_distillation_of_a_smaller_student(models, data, kind):
    hf = models[kind]
    events = []
    student, report = distill_hf(hf, data, HFDistillConfig(epochs=2, lr=2e-3), callback=events.append)
    assert len(student.blocks()) == 1 and report.metrics["params_student"] < report.metrics["params_teacher"]
    assert report.metrics["fidelity_after"] > report.metrics["fidelity_before"]
    assert [h["epoch"] for h in report.metrics["history"]] == [1, 2] and events
    stopped, rep = distill_hf(hf, data, HFDistillConfig(epochs=2), stop=lambda: True)
    assert rep.metrics["stopped"] and rep.metrics["history"] == []


# ---- command line -------------------------------------------------------------------------------

def test_cli_hf(capsys, folders):
    assert main(["hf", "--folder", str(folders["encoder"]), "--method", "heads", "--fraction", "0.5",
                 "--max-texts", "16", "--no-latency", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "encoder" and out["params_after"] < out["params_before"] and out["fidelity"] <= 1.0
    assert main(["hf", "--folder", "demo:decoder", "--method", "nm", "--max-texts", "8", "--no-latency"]) == 0
    assert "fidelity=" in capsys.readouterr().out
    assert main(["hf", "--folder", str(folders["encoder"]), "--method", "quantize", "--bits", "1"]) == 2
    assert "bits" in capsys.readouterr().err


def test_cli_hf_save_writes_a_folder_the_app_loads(capsys, folders, tmp_path):
    out_dir = tmp_path / "pruned"
    assert main(["hf", "--folder", str(folders["encoder"]), "--method", "prune", "--sparsity", "0.7",
                 "--max-texts", "8", "--no-latency", "--save", str(out_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["saved"] == str(out_dir)
    assert load_hf_folder(out_dir).task == "encoder"
    assert main(["hf", "--folder", str(folders["encoder"]), "--method", "lowrank", "--max-texts", "8",
                 "--no-latency", "--save", str(tmp_path / "lr")]) == 2
    assert "load" in capsys.readouterr().err


def test_structured_pruning_after_int8_is_a_clear_error(models):
    int8, _ = compress(models["encoder"], Int8Config())
    with pytest.raises(UnsupportedLayerError, match="before quantizing"):
        compress(int8, HeadPruneConfig())


# ---- export as a Hugging Face folder -----------------------------------------------------------

@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_pruned_model_exports_and_loads_back_the_same(models, data, tmp_path, kind):
    import io
    import zipfile

    small, _ = compress(models[kind], HFPruneConfig(sparsity=0.5))
    payload = hf_zip_bytes(small, data)
    zipfile.ZipFile(io.BytesIO(payload)).extractall(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    back = load_hf_folder(tmp_path)
    assert _fid(small, back, data)["cosine"] > 0.9999


@pytest.mark.parametrize("cfg", [HFLowRankConfig(rank_ratio=0.5), Int8Config(), HeadPruneConfig()],
                         ids=["lowrank", "int8", "heads"])
def test_structures_a_folder_cannot_describe_are_refused(models, data, cfg):
    small, _ = compress(models["encoder"], cfg)
    with pytest.raises(UnsupportedLayerError, match="Hugging Face folder|loads? back"):
        hf_zip_bytes(small, data)
