"""``ifcnn_jax.folded`` (IFCNN as folded arrays, no Flax) and ``ifcnn_jax.network``
(its plain-JAX program): the same results as the Flax model and PyTorch."""

from __future__ import annotations

import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

import ifcnn_jax
from convert.torch_reference import run_reference
from ifcnn_jax import inference
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.folded import FoldedIFCNN, load_folded, param_shapes
from ifcnn_jax.io.images import read_image
from ifcnn_jax.io.state_dicts import params_from_release_file
from ifcnn_jax.model import IFCNN
from tests.helpers import max_abs_diff, random_sources

TOLERANCE = 1e-4  # largest absolute difference allowed against PyTorch (test_inference.py)
RULE_FILES = {"max": "IFCNN-MAX.pth", "sum": "IFCNN-SUM.pth", "mean": "IFCNN-MEAN.pth"}


def test_parameter_tree_is_the_flax_models():
    state = nnx.to_pure_dict(nnx.state(IFCNN("max", rngs=nnx.Rngs(0))))
    assert jax.tree.map(lambda v: tuple(v.shape), state) == param_shapes()


@pytest.mark.parametrize("rule", ["max", "sum", "mean"])
def test_folded_weights_equal_the_flax_models(release_dir, released_models, rule):
    flax_model, _ = released_models[rule]
    folded = load_folded(release_dir / "snapshots" / RULE_FILES[rule])
    assert folded.fuse_rule == rule
    expected = inference.folded_params(flax_model)
    assert sorted(folded.weights) == sorted(expected)
    for name, value in folded.weights.items():
        np.testing.assert_array_equal(value, np.asarray(expected[name]), err_msg=name)
    from_model = FoldedIFCNN.from_model(flax_model)
    for name, value in from_model.weights.items():
        np.testing.assert_array_equal(value, folded.weights[name], err_msg=name)
    assert from_model.digest == folded.digest


@pytest.mark.parametrize("rule", ["max", "sum", "mean"])
def test_folded_model_matches_pytorch_and_the_flax_model(release_dir, released_models, rule):
    flax_model, reference = released_models[rule]
    folded = load_folded(release_dir / "snapshots" / RULE_FILES[rule])
    sources = random_sources(3, 2, 23, 37, seed=11)
    got = inference.forward(folded, sources, tile=0)
    assert max_abs_diff(got, run_reference(reference, sources)) <= TOLERANCE
    np.testing.assert_array_equal(np.asarray(got), np.asarray(inference.forward(flax_model, sources, tile=0)))
    tiled = inference.forward(folded, sources, tile=16)
    np.testing.assert_array_equal(
        np.asarray(tiled), np.asarray(inference.forward(flax_model, sources, tile=16))
    )


def test_fusing_real_photos_gives_the_flax_models_pixels(release_dir, released_models):
    cmf = release_dir / "datasets" / "CMFDataset"
    images = [read_image(cmf / f"lytro-02-{s}.jpg")[:96, :130] for s in "AB"]
    folded = load_folded(release_dir / "snapshots" / "IFCNN-MAX.pth")
    flax_model, _ = released_models["max"]
    np.testing.assert_array_equal(
        ifcnn_jax.fuse(folded, images, "multifocus"), ifcnn_jax.fuse(flax_model, images, "multifocus")
    )


def test_wrong_or_non_finite_weights_are_user_errors(release_dir, tmp_path):
    params = params_from_release_file(release_dir / "snapshots" / "IFCNN-MAX.pth")
    with pytest.raises(ValueError, match="does not match IFCNN"):
        FoldedIFCNN.from_params({**params, "conv4": {"kernel": params["conv4"]["kernel"]}}, "max")
    bad = {**params, "conv4": {**params["conv4"], "bias": np.array([0.0, np.nan, 0.0], np.float32)}}
    with pytest.raises(ValueError, match="NaN or infinite"):
        FoldedIFCNN.from_params(bad, "max")
    unnamed = tmp_path / "weights.pth"
    unnamed.write_bytes((release_dir / "snapshots" / "IFCNN-MAX.pth").read_bytes())
    with pytest.raises(IFCNNError, match="fusion rule"):
        load_folded(unnamed)
    assert load_folded(unnamed, "sum").fuse_rule == "sum"
    folded = load_folded(release_dir / "snapshots" / "IFCNN-MAX.pth")
    with pytest.raises(ValueError):
        folded.weights["conv1"][0, 0, 0, 0] = 1.0  # read-only: the digest stays true


def test_loading_and_fusing_modules_import_no_jax_or_flax(release_dir):
    code = (
        "import sys; import ifcnn_jax.recipes, ifcnn_jax.aot; from ifcnn_jax.folded import load_folded; "
        f"load_folded({str(release_dir / 'snapshots' / 'IFCNN-MAX.pth')!r}); "
        "print(sorted(m for m in ('jax', 'flax', 'torch') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
