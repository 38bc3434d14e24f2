"""A user's data file reaches the model as stored: user models of architectures the zoo lacks,
trained on inputs in [0, 1] (images) and in 0..16 (flat features), score on their own file what
torch computes directly; preprocessing and the scored split are explicit and part of the
data's identity; a mismatch is said in one line."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compression.cli import main
from compression.data.datasets import Preprocess, load_digits, parse_preprocess
from compression.data.files import load_data
from compression.core.errors import ConfigError, DataError, UnsupportedLayerError
from compression.metrics.evaluate import evaluate, plausibility_warning
from compression.models.loading import load_model


class PoolNet(nn.Module):
    """Conv + GroupNorm + Hardswish, a residual add, max pooling: nothing the zoo uses."""

    def __init__(self):
        super().__init__()
        self.stem, self.gn = nn.Conv2d(1, 12, 3, padding=1), nn.GroupNorm(3, 12)
        self.res = nn.Conv2d(12, 12, 3, padding=1)
        self.head = nn.Linear(12 * 4 * 4, 10)

    def forward(self, x):
        h = F.hardswish(self.gn(self.stem(x)))
        h = F.max_pool2d(h + F.relu(self.res(h)), 2)
        return self.head(h.flatten(1))


def _train(net: nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int = 12) -> nn.Module:
    torch.manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(epochs):
        for idx in torch.randperm(len(y)).split(64):
            opt.zero_grad()
            F.cross_entropy(net(X[idx]), y[idx]).backward()
            opt.step()
    return net.eval()


def _run(capsys, *argv) -> dict:
    quiet = [] if argv[0] == "run" else ["--no-latency", "--no-store"]  # `run` times and stores only when asked
    assert main([*argv, "--json", *quiet]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """(dir, {file: accuracy computed directly}, X images in [0, 1], y)."""
    digits = load_digits("none", "all")
    raw, y = digits.scored.X, digits.scored.y                  # (N, 1, 8, 8) in 0..16, file order
    images = raw / 16.0
    torch.manual_seed(0)
    cnn = _train(PoolNet(), images, y)
    mlp = _train(nn.Sequential(nn.Flatten(), nn.Linear(64, 48), nn.Tanh(), nn.Linear(48, 10)), raw.flatten(1), y)
    d = tmp_path_factory.mktemp("own")
    np.savez(d / "images.npz", X=images.numpy(), y=y.numpy())
    np.savez(d / "flat.npz", X=raw.flatten(1).numpy(), y=y.numpy())
    ep = torch.export.export(cnn, (images[:2],), dynamic_shapes={"x": {0: torch.export.Dim("b", min=1, max=4096)}})
    torch.export.save(ep, d / "cnn.pt2")
    torch.jit.save(torch.jit.script(cnn), d / "cnn.pt")
    torch.jit.save(torch.jit.script(mlp), d / "mlp.pt")
    with torch.no_grad():
        own = {"cnn": (cnn(images).argmax(1) == y).float().mean().item(),
               "mlp": (mlp(raw.flatten(1)).argmax(1) == y).float().mean().item()}
    return d, own, images, y


@pytest.mark.parametrize("model,data", [("cnn.pt2", "images.npz"), ("cnn.pt", "images.npz"), ("mlp.pt", "flat.npz")])
def test_own_model_scores_its_true_accuracy_on_the_whole_file(user, capsys, model, data):
    d, own, _, y = user
    out = _run(capsys, "evaluate", "--model", str(d / model), "--data", str(d / data))
    assert out["accuracy"] == pytest.approx(own[model.split(".")[0]], abs=1e-6)
    assert own[model.split(".")[0]] > 0.9
    assert (out["split"], out["n_samples"], out["preprocess"]) == ("all", len(y), "none")
    assert "warning" not in out


def test_test_split_and_preprocessing_are_chosen_and_recorded(user, capsys):
    d, own, images, y = user
    held_out = _run(capsys, "evaluate", "--model", str(d / "cnn.pt2"), "--data", str(d / "images.npz"),
                    "--split", "test")
    assert (held_out["split"], held_out["n_samples"]) == ("test", 360)
    wrong = _run(capsys, "evaluate", "--model", str(d / "mlp.pt"), "--data", str(d / "flat.npz"),
                 "--preprocess", "standardize")
    assert wrong["accuracy"] < own["mlp"] - 0.1
    assert "--preprocess none" in wrong["warning"]
    fixed = load_data(d / "images.npz", preprocess="0.5,0.25")
    assert torch.allclose(fixed.scored.X, (images - 0.5) / 0.25)
    prints = {load_data(d / "images.npz", preprocess=p, split=s).fingerprint
              for p in ("none", "standardize", "0.5,0.25") for s in ("all", "test")}
    assert len(prints) == 6                              # preprocessing and scored split are the run's identity


def test_a_method_says_its_scores_include_the_samples_it_calibrated_on(user, capsys):
    d, _, _, _ = user
    out = _run(capsys, "quantize", "--model", str(d / "cnn.pt2"), "--data", str(d / "images.npz"),
               "--bits", "8", "--activations")
    assert out["split"] == "all" and "also used for calibration" in out["note"]
    held_out = _run(capsys, "quantize", "--model", str(d / "cnn.pt2"), "--data", str(d / "images.npz"),
                    "--bits", "8", "--activations", "--split", "test")
    assert "note" not in held_out and held_out["agreement"] > 0.9


def test_digits_keep_their_documented_normalisation_and_identity():
    digits = load_digits()
    assert digits.preprocess.kind == "standardize" and digits.eval_split == "test"
    assert digits.fingerprint == "90988305a1723080"              # unchanged: stored runs still match
    assert abs(float(digits.train.X.mean())) < 1e-5 and float(digits.train.X.std()) == pytest.approx(1, abs=1e-4)
    raw = load_digits("none")
    assert torch.equal(digits.test.X * digits.std + digits.mean, raw.test.X) or \
        torch.allclose(digits.test.X * digits.std + digits.mean, raw.test.X, atol=1e-5)


def test_per_channel_preprocessing(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (60, 3, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "rgb.npz", X=X, y=np.arange(60) % 3)
    data = load_data(tmp_path / "rgb.npz", preprocess="0.5,0.4,0.3/0.25,0.2,0.1")
    expect = (X - np.array([0.5, 0.4, 0.3]).reshape(1, 3, 1, 1)) / np.array([0.25, 0.2, 0.1]).reshape(1, 3, 1, 1)
    assert np.allclose(data.scored.X.numpy(), expect, atol=1e-5)
    assert data.preprocess.spec == "0.5,0.4,0.3/0.25,0.2,0.1"
    with pytest.raises(DataError, match="2 values per channel but the data has 3"):
        load_data(tmp_path / "rgb.npz", preprocess="0.5,0.5/0.2,0.2")


@pytest.mark.parametrize("spec", ["zscore", "0.5", "0.5,0,1", "0.5,0", "1,2/3", "nan,1"])
def test_bad_preprocessing_is_a_config_error_and_one_line_on_the_cli(spec, capsys):
    with pytest.raises(ConfigError):
        parse_preprocess(spec)
    assert main(["evaluate", "--model", "demo:mlp", "--preprocess", spec, "--no-latency", "--no-store"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1


def test_plausibility_says_when_a_model_is_near_chance(user):
    d, _, _, _ = user
    model = load_model(d / "cnn.pt2").model
    data = load_data(d / "images.npz")
    assert plausibility_warning(model, data) is None
    perm = torch.roll(torch.arange(10), 3)                    # another label order
    relabelled = type(data)(**{**data.__dict__, "whole": type(data.whole)(data.whole.X, perm[data.whole.y])})
    message = plausibility_warning(model, relabelled)
    assert message and "close to chance" in message and "label order" in message
    assert evaluate(model, data, latency=False, macs=False).split == "all"
    assert Preprocess().label.startswith("none")


def test_a_recipe_carries_its_data_options(user, capsys, tmp_path):
    d, own, _, y = user
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {preprocess: none, split: test}\nsteps:\n  - {kind: prune, sparsity: 0.3}\n")
    out = _run(capsys, "run", str(recipe), "--model", str(d / "mlp.pt"), "--data", str(d / "flat.npz"))
    assert (out["split"], out["n_samples"], out["preprocess"]) == ("test", 360, "none")
    out = _run(capsys, "run", str(recipe), "--model", str(d / "mlp.pt"), "--data", str(d / "flat.npz"),
               "--split", "all")                                              # the command line wins
    assert out["n_samples"] == len(y)
    recipe.write_text("data: {preprocess: zscore}\nsteps:\n  - {kind: prune, sparsity: 0.3}\n")
    assert main(["run", str(recipe), "--model", "demo:mlp"]) == 2
    assert "Unknown preprocessing" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["cnn.pt", "cnn.pt2"])
def test_sweeps_proxies_and_allocation_on_user_formats(user, name):
    from compression.analysis.allocation import plan_and_apply
    from compression.analysis.proxies import weight_stats
    from compression.analysis.sensitivity import prune_sweep, quant_sweep

    d, _, _, _ = user
    model, data = load_model(d / name).model, load_data(d / "images.npz")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sweep = prune_sweep(model, data, levels=(0.0, 0.5, 0.95))
    assert set(sweep["layer"]) == {"stem", "res", "head"}
    worst = sweep[sweep["level"] == 0.95].set_index("layer")["accuracy"]
    assert worst.min() < sweep[sweep["level"] == 0.0]["accuracy"].min() - 0.05    # pruning hurts somewhere
    bits = quant_sweep(model, data, bits=(2, 8))
    assert (bits[bits["level"] == 8]["accuracy"] > 0.95).all()
    assert list(weight_stats(model)["layer"]) == ["stem", "res", "head"]
    plan = plan_and_apply(model, data, sweep, 0.5)
    assert plan.split == "all" and plan.achieved == pytest.approx(0.5, abs=0.05)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the original is untouched
    if name == "cnn.pt":
        with pytest.raises(UnsupportedLayerError, match="torch.export"):
            quant_sweep(model, data, bits=(4,), activations=True)


@pytest.mark.parametrize("name", ["cnn.pt", "cnn.pt2"])
def test_a_compressed_user_model_saves_in_its_format_and_loads_back(user, capsys, tmp_path, name):
    from compression.methods.pruning import finetune
    from compression.methods.training import TrainConfig, fit

    d, _, images, _ = user
    out = _run(capsys, "prune", "--model", str(d / name), "--data", str(d / "images.npz"), "--sparsity", "0.6",
               "--save", str(tmp_path / name))
    assert out["saved_format"] == ("torchscript" if name == "cnn.pt" else "exported")
    back = _run(capsys, "evaluate", "--model", str(tmp_path / name), "--data", str(d / "images.npz"))
    assert (back["accuracy"], back["nonzero_params"]) == (out["accuracy"], out["nonzero_params"])
    assert out["nonzero_params"] < 0.5 * out["baseline"]["nonzero_params"]
    if name == "cnn.pt":
        with pytest.raises(UnsupportedLayerError, match="grow its zeros back"):
            finetune(load_model(tmp_path / name).model, load_data(d / "images.npz"), TrainConfig(epochs=1))
        with pytest.raises(UnsupportedLayerError, match="torch.export"):
            fit(load_model(d / name).model, load_data(d / "images.npz"), TrainConfig(epochs=1))


@pytest.mark.parametrize("name", ["cnn.pt", "cnn.pt2"])
def test_a_compressed_user_model_saves_compact_with_its_architecture(user, capsys, tmp_path, name):
    d, _, images, _ = user
    args = ["--model", str(d / name), "--data", str(d / "images.npz")]
    dense = _run(capsys, "evaluate", *args)
    pruned = _run(capsys, "prune", *args, "--sparsity", "0.7", "--save", str(tmp_path / "p.cstudio"))
    assert pruned["saved_format"] == "compact" and pruned["size_method"].startswith("compact format")
    assert pruned["size_bytes"] < 0.7 * dense["size_bytes"]                   # true sizes for a user model
    back = load_model(tmp_path / "p.cstudio")
    assert back.origin == "compact"
    again = _run(capsys, "evaluate", "--model", str(tmp_path / "p.cstudio"), "--data", str(d / "images.npz"))
    assert (again["accuracy"], again["nonzero_params"]) == (pruned["accuracy"], pruned["nonzero_params"])
    q = _run(capsys, "quantize", *args, "--bits", "4", "--save", str(tmp_path / "q.cstudio"))
    assert load_model(tmp_path / "q.cstudio").model(images[:8]).shape == (8, 10)
    assert q["size_bytes"] < 0.6 * dense["size_bytes"]                         # (the architecture takes a few KB)


def test_a_damaged_user_compact_file_is_refused(user, tmp_path):
    from compression.models.compact import load_compact, to_bytes
    from compression.models.programs import _PROGRAMS
    from compression.core.errors import ModelLoadError
    from compression.methods.pruning import PruneConfig, prune

    d, _, _, _ = user
    pruned, _ = prune(load_model(d / "cnn.pt2").model, PruneConfig(sparsity=0.5))
    data = to_bytes(pruned)
    with pytest.raises(ModelLoadError, match="load it with compression.models.loading.load_model"):
        load_compact(data)
    (tmp_path / "cut.cstudio").write_bytes(data[:-40])
    with pytest.raises(ModelLoadError):
        load_model(tmp_path / "cut.cstudio")
    assert _PROGRAMS                                          # the architecture was written once, then reused


def test_layer_table_names_user_layers_by_their_type(user):
    from compression.metrics.summary import layer_table

    d, _, images, _ = user
    ts, ep = (layer_table(load_model(d / n).model, images[:1]) for n in ("cnn.pt", "cnn.pt2"))
    assert list(ts["type"]) == list(ep["type"]) == ["Conv2d", "GroupNorm", "Conv2d", "Linear"]
    weights = ep["type"] != "GroupNorm"
    assert ts["macs"].isna().all() and (ep["macs"][weights] > 0).all()   # TorchScript: per layer unknown, not 0
    assert ts.attrs["total_macs"] == ep.attrs["total_macs"] == int(ep["macs"].sum())
