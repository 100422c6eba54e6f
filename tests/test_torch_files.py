"""The torch-free reader of PyTorch state-dict files, against torch.load."""

from __future__ import annotations

import os
import pickle
import zipfile

import jax
import numpy as np
import pytest
import torch

import ifcnn_jax
from ifcnn_jax.cli.fuse import main as fuse_main
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.io.images import read_image, write_image
from ifcnn_jax.io.torch_files import read_state_dict


@pytest.mark.parametrize("name", ["IFCNN-MAX.pth", "IFCNN-SUM.pth", "IFCNN-MEAN.pth"])
def test_released_files_read_exactly_as_torch_load(release_dir, name):
    path = release_dir / "snapshots" / name
    ours = read_state_dict(path)
    reference = torch.load(path, map_location="cpu", weights_only=True)
    assert list(ours) == list(reference)
    for key, tensor in reference.items():
        assert ours[key].dtype == np.float32
        np.testing.assert_array_equal(ours[key], tensor.numpy())


def _awkward_state():
    base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    return {
        "conv.weight": torch.randn(8, 3, 3, 3),
        "transposed": base.permute(2, 0, 1),  # non-contiguous strides
        "slice": base[1:, 2:],  # storage offset, shared storage
        "float64": torch.randn(4, dtype=torch.float64),
        "half": torch.randn(5).half(),
        "int64": torch.arange(7),
        "flags": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.5),
    }


@pytest.mark.parametrize("zip_format", [True, False])
def test_both_file_layouts_match_torch_load(tmp_path, zip_format):
    state = _awkward_state()
    path = tmp_path / "state.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    ours = read_state_dict(path)
    for key, tensor in state.items():
        assert ours[key].shape == tuple(tensor.shape), key
        np.testing.assert_array_equal(ours[key], tensor.numpy(), err_msg=key)


def test_refuses_code_in_the_pickle(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": Evil()}))
    with pytest.raises(IFCNNError, match="not allowed"):
        read_state_dict(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "no such file"),
        (b"plain text", "not a PyTorch state dict"),
        ("list", "not a state dict of tensors"),
    ],
)
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "x.pth"
    if content == "list":
        torch.save([torch.zeros(2)], path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(IFCNNError, match=message):
        read_state_dict(path)


def test_load_and_fuse_straight_from_a_release_file(release_dir, converted_checkpoints, tmp_path):
    snapshots = release_dir / "snapshots"
    direct = ifcnn_jax.load(str(snapshots / "IFCNN-MEAN.pth"))
    converted = ifcnn_jax.load(str(converted_checkpoints["mean"]))
    assert direct.fuse_rule == "mean"
    nnx = ifcnn_jax.model.nnx
    direct_tree = nnx.to_pure_dict(nnx.state(direct))
    converted_tree = nnx.to_pure_dict(nnx.state(converted))
    assert jax.tree.structure(direct_tree) == jax.tree.structure(converted_tree)
    for a, b in zip(jax.tree.leaves(direct_tree), jax.tree.leaves(converted_tree)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The command line takes the snapshots folder and picks the task's model (MEAN here).
    ivd = release_dir / "datasets" / "IVDataset"
    srcs = [
        write_image(tmp_path / f"{i}.png", read_image(ivd / n)[:40, :50])
        for i, n in enumerate(["Camp_Vis.png", "Camp_IR.png"])
    ]
    assert (
        fuse_main(
            [
                "--task",
                "exposure",
                "--model",
                str(snapshots),
                *map(str, srcs),
                "-o",
                str(tmp_path / "f.png"),
                "-q",
            ]
        )
        == 0
    )
    expected = ifcnn_jax.fuse(converted, [read_image(p) for p in srcs], "exposure")
    np.testing.assert_array_equal(read_image(tmp_path / "f.png"), expected)
