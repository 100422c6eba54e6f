"""The multi-focus training config and the options it uses: conv1 from a released .pth,
zero-initialised conv4, colour augmentation in training batches only."""

from __future__ import annotations

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import ifcnn_jax
from ifcnn_jax import param_trees
from ifcnn_jax.data.photos import FolderCollection
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.model import new_ifcnn
from train import input_pipeline
from train.config_check import validate_config
from train.configs import multifocus
from train.step import initial_model, make_loss_fn


def _config(tmp_path, **overrides):

    config = multifocus.get_config()
    for folder in ("train", "heldout"):
        (tmp_path / folder).mkdir(exist_ok=True)
    config.data.folder = str(tmp_path / "train")
    config.data.eval_folder = str(tmp_path / "heldout")
    config.conv1_checkpoint = ""
    for key, value in overrides.items():
        node = config
        *path, leaf = key.split("__")
        for p in path:
            node = node[p]
        node[leaf] = value
    return config


def test_config_validates(tmp_path):

    validate_config(_config(tmp_path))


def test_bad_values_are_refused(tmp_path):

    with pytest.raises(IFCNNError, match="config.data.colour_augment=1.5"):
        validate_config(_config(tmp_path, data__colour_augment=1.5))
    with pytest.raises(IFCNNError, match="config.conv4_init='small'"):
        validate_config(_config(tmp_path, conv4_init="small"))
    with pytest.raises(IFCNNError, match="no such file"):
        validate_config(_config(tmp_path, conv1_checkpoint=str(tmp_path / "missing.pth")))


def test_conv1_from_released_pth_matches_torch(release_dir):
    torch = pytest.importorskip("torch")

    path = release_dir / "snapshots" / "IFCNN-MAX.pth"
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    weight = next(v for k, v in state.items() if k.endswith("conv1.weight")).numpy()  # OIHW
    model = new_ifcnn("max", conv1_from=str(path))
    np.testing.assert_array_equal(np.asarray(model.conv1.kernel[...]), weight.transpose(2, 3, 1, 0))


def test_zero_conv4_changes_only_conv4(tmp_path):

    he, _ = initial_model(_config(tmp_path, conv4_init="he"))
    zero, _ = initial_model(_config(tmp_path, conv4_init="zeros"))
    assert not np.any(zero["conv4"]["kernel"]) and np.any(he["conv4"]["kernel"])
    for name in ("conv1", "conv2", "conv3"):
        for a, b in zip(_leaves(he[name]), _leaves(zero[name])):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(he["conv4"]["bias"], zero["conv4"]["bias"])


def _leaves(tree):
    if isinstance(tree, dict):
        for key in sorted(tree):
            yield from _leaves(tree[key])
    else:
        yield tree


def test_colour_augmentation_only_in_training_examples(tmp_path):

    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "p.png"), photo)
    collection = FolderCollection(tmp_path)
    config = _config(tmp_path, data__colour_augment=1.0)
    plain = _config(tmp_path, data__colour_augment=0.0)
    off = input_pipeline.make_example(collection, config.data, 0, 3, 32)  # eval path: augment=False
    base = input_pipeline.make_example(collection, plain.data, 0, 3, 32, augment=True)
    on = input_pipeline.make_example(collection, config.data, 0, 3, 32, augment=True)
    np.testing.assert_array_equal(off["target"], base["target"])
    np.testing.assert_array_equal(off["sources"], base["sources"])
    assert not np.array_equal(on["target"], base["target"])


class TestFineTuning:
    """``init_model`` starts from a trained model; ``batch_norm="frozen"`` trains with
    BatchNorm normalising by its running statistics, which stay fixed."""

    def test_init_model_takes_every_parameter_and_statistic(self, tmp_path):
        params, stats = initial_model(_config(tmp_path, init_model="ifcnn-jax-mf"))
        want_params, want_stats = param_trees.split(ifcnn_jax.load("ifcnn-jax-mf"))
        for got, want in ((params, want_params), (stats, want_stats)):
            assert sorted(param_trees.flatten(got)) == sorted(param_trees.flatten(want))
            for key, value in param_trees.flatten(want).items():
                np.testing.assert_array_equal(param_trees.flatten(got)[key], np.asarray(value))

    def test_frozen_batch_norm_loss_is_the_inference_models_error(self, tmp_path):
        rng = np.random.default_rng(0)
        sources = jnp.asarray(rng.normal(size=(2, 3, 24, 24, 3)), jnp.float32)  # (N, B, h, w, 3)
        target = jnp.asarray(rng.normal(size=(3, 24, 24, 3)), jnp.float32)
        model = ifcnn_jax.load("ifcnn-jax-mf")
        model.eval()
        want = float(np.mean((np.asarray(model(sources), np.float64) - np.asarray(target, np.float64)) ** 2))
        losses = {}
        for mode in ("frozen", "batch"):
            config = _config(tmp_path, init_model="ifcnn-jax-mf", batch_norm=mode)
            params, stats = initial_model(config)
            loss, aux = jax.jit(make_loss_fn(config, None))(params, stats, sources, target, None)
            losses[mode] = float(loss)
            new_stats = aux["batch_stats"]
            changed = [
                not np.array_equal(np.asarray(new_stats[layer]["bn"][stat]), stats[layer]["bn"][stat])
                for layer in ("conv2", "conv3")
                for stat in ("mean", "var")
            ]
            assert not any(changed) if mode == "frozen" else all(changed)
        np.testing.assert_allclose(losses["frozen"], want, rtol=1e-5)
        assert abs(losses["batch"] - want) > 1e-3 * want  # batch statistics give another output

    def test_bad_values_are_refused(self, tmp_path):
        with pytest.raises(IFCNNError, match="config.batch_norm='running'"):
            validate_config(_config(tmp_path, batch_norm="running"))
        with pytest.raises(IFCNNError, match="config.init_model="):
            validate_config(_config(tmp_path, init_model=str(tmp_path / "nothing")))
