"""Weights files shipped in the package (``.npz``, no pickle): round trip, refusal of
pickled content, and loading by path through ``ifcnn_jax.load``."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from flax import nnx

import ifcnn_jax
from ifcnn_jax.data import synthesis
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.images import to_8bit
from ifcnn_jax.io.weight_files import load_npz, save_npz, shipped_path
from ifcnn_jax.model import new_ifcnn


def _model_tree(seed: int) -> dict:
    model = new_ifcnn("max", seed=seed)
    return nnx.to_pure_dict(nnx.state(model))


def test_round_trip_and_load_by_path(tmp_path):
    tree = _model_tree(4)
    path = save_npz(tmp_path / "w.npz", tree, {"kind": "ifcnn", "fuse_rule": "sum", "step": 3})
    params, metadata = load_npz(path)
    assert metadata == {"kind": "ifcnn", "fuse_rule": "sum", "step": 3}
    assert set(params) == set(tree) and set(params["conv2"]["bn"]) == {"scale", "bias", "mean", "var"}
    np.testing.assert_array_equal(
        params["conv2"]["conv"]["kernel"], np.asarray(tree["conv2"]["conv"]["kernel"])
    )
    model = ifcnn_jax.load(str(path))
    assert model.fuse_rule == "sum"
    np.testing.assert_array_equal(np.asarray(model.conv4.bias[...]), np.asarray(tree["conv4"]["bias"]))


def test_a_pickled_array_is_refused(tmp_path):
    buffer = io.BytesIO()
    np.save(buffer, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    path = tmp_path / "evil.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("conv1/kernel.npy", buffer.getvalue())
        archive.writestr("__metadata__.npy", buffer.getvalue())
    with pytest.raises(IFCNNError, match="not a weights file"):
        load_npz(path)


def test_weights_of_another_kind_are_refused(tmp_path):
    path = save_npz(tmp_path / "r.npz", {"w": np.zeros(2, np.float32)}, {"kind": "resnet101"})
    with pytest.raises(IFCNNError, match="not an IFCNN model"):
        ifcnn_jax.load(str(path))


def test_the_shipped_model_loads_by_name_matches_its_card_and_fuses_usefully():
    path = shipped_path("ifcnn-jax-mf")
    assert path is not None
    card = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    assert hashlib.sha256(path.read_bytes()).hexdigest() in card
    model = ifcnn_jax.load("ifcnn-jax-mf")
    assert model.fuse_rule == "max"
    # A usable model: well above the source average on a held-out photo with ground truth.
    example = synthesis.synthesize_example(
        skimage.data.chelsea(), rng=np.random.default_rng(11), crop_size=192, radius_range=(3, 8)
    )
    sources = [to_8bit(s) for s in example.sources]
    target = to_8bit(example.target).astype(np.float64)

    def psnr(image):
        return 10 * np.log10(255**2 / np.mean((image.astype(np.float64) - target) ** 2))

    average = np.mean(np.stack(sources).astype(np.float32), 0).round()
    assert psnr(ifcnn_jax.fuse(model, sources, "multifocus")) > psnr(average) + 3
