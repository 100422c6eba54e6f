"""ifcnn_jax.param_trees against flax's own view of a model's state."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from ifcnn_jax import param_trees
from ifcnn_jax.model import new_ifcnn


def _leaves_by_name(tree):
    return {jax.tree_util.keystr(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


class TestSplitAndMerge:
    def test_split_gives_the_param_and_batch_stat_parts(self):
        model = new_ifcnn("max", seed=1)
        params, stats = param_trees.split(model)
        assert set(params["conv2"]["bn"]) == {"scale", "bias"}
        assert set(stats["conv2"]["bn"]) == {"mean", "var"}
        assert "conv4" in params and "conv4" not in stats

    def test_merge_of_split_is_the_whole_state(self):
        model = new_ifcnn("mean", seed=2)
        model.conv3.bn.mean[...] = model.conv3.bn.mean[...] + 0.5  # not the defaults
        whole = _leaves_by_name(nnx.to_pure_dict(nnx.state(model)))
        merged = _leaves_by_name(param_trees.merge(*param_trees.split(model)))
        assert merged.keys() == whole.keys()
        for name, leaf in whole.items():
            np.testing.assert_array_equal(np.asarray(merged[name]), np.asarray(leaf))

    def test_merge_leaves_its_inputs_alone(self):
        params = {"a": {"bn": {"scale": 1}}, "b": {"w": 2}}
        stats = {"a": {"bn": {"mean": 3}}, "c": {"x": 4}}
        merged = param_trees.merge(params, stats)
        assert merged == {"a": {"bn": {"scale": 1, "mean": 3}}, "b": {"w": 2}, "c": {"x": 4}}
        assert params == {"a": {"bn": {"scale": 1}}, "b": {"w": 2}}
        assert stats == {"a": {"bn": {"mean": 3}}, "c": {"x": 4}}

    def test_a_name_in_both_is_an_error(self):
        with pytest.raises(ValueError, match="'scale'"):
            param_trees.merge({"bn": {"scale": 1}}, {"bn": {"scale": 2}})


class TestFlatten:
    def test_names_join_the_keys(self):
        tree = {"conv1": {"kernel": 1}, "conv2": {"bn": {"scale": 2, "bias": 3}}}
        assert param_trees.flatten(tree) == {"conv1/kernel": 1, "conv2/bn/scale": 2, "conv2/bn/bias": 3}

    def test_unflatten_inverts_flatten(self):
        tree = nnx.to_pure_dict(nnx.state(new_ifcnn("sum", seed=0)))
        again = param_trees.unflatten(param_trees.flatten(tree))
        assert jax.tree.structure(again) == jax.tree.structure(tree)
        for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(tree)):
            assert a is b
