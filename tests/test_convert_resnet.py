"""``convert/from_torch.py resnet101``: output layout and metadata, --verify, the
--torchvision-weights path (offline, through torch's hub cache), and bad input."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import torch
import torchvision

from convert import resnet101
from ifcnn_jax.io.checkpoints import load_params
from tests import torch_resnet

REPO_ROOT = Path(__file__).resolve().parents[1]
TAPS = ("conv1", "relu", "layer1", "layer2", "layer3", "layer4")
V1_FILE_NAME = "resnet101-63fe2227.pth"  # torchvision's IMAGENET1K_V1 file


def assert_nothing_written(out_dir: Path) -> None:
    assert not out_dir.exists()
    leftovers = [p.name for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}.")]
    assert leftovers == []


def assert_one_line_error(status: int, stderr: str, *fragments: str) -> None:
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def test_conversion_metadata_and_verify_report():
    out_dir, stdout = torch_resnet.converted_checkpoint()
    errors = dict(re.findall(r"verify: (\w+)\s+max .* = (\S+)", stdout))
    assert set(errors) == set(TAPS)
    assert all(float(v) <= 1e-4 for v in errors.values()), errors
    _, metadata = load_params(out_dir)
    src = torch_resnet.saved_state_dict()
    assert metadata["kind"] == "resnet101"
    assert metadata["source_file"] == src.name
    assert metadata["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert metadata["converted_by"] == "convert/from_torch.py resnet101"
    assert "torchvision_weights" not in metadata


def test_parameter_tree_layout():
    params, _ = load_params(torch_resnet.converted_checkpoint()[0])
    net = torch_resnet.torch_resnet101()
    # conv1 at params['conv1']['kernel'], HWIO: what new_ifcnn(conv1_from=...) reads.
    np.testing.assert_array_equal(params["conv1"]["kernel"], net.conv1.weight.numpy().transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(
        params["layer2"]["0"]["downsample"]["bn"]["var"], net.layer2[0].downsample[1].running_var.numpy()
    )
    np.testing.assert_array_equal(params["layer3"]["22"]["bn3"]["scale"], net.layer3[22].bn3.weight.numpy())
    weights = [
        k for k in net.state_dict() if not k.endswith("num_batches_tracked") and not k.startswith("fc.")
    ]
    leaves = []

    def collect(tree):
        for value in tree.values():
            collect(value) if isinstance(value, dict) else leaves.append(value)

    collect(params)
    assert len(leaves) == len(weights)


def test_verify_failure_writes_nothing(tmp_path, monkeypatch):

    original = resnet101.state_dict_to_params

    def swapped_bn_fields(state):
        params = original(state)
        bn = params["layer3"]["5"]["bn2"]
        bn["mean"], bn["var"] = bn["var"], bn["mean"]
        return params

    monkeypatch.setattr(resnet101, "state_dict_to_params", swapped_bn_fields)
    out_dir = tmp_path / "out"
    status, stdout, stderr = torch_resnet.run_converter(
        ["resnet101", str(torch_resnet.saved_state_dict()), str(out_dir), "--verify"]
    )
    assert_one_line_error(status, stderr, "verification failed at layer3", "nothing written")
    assert_nothing_written(out_dir)


def test_resnet50_given_as_resnet101_names_first_mismatch(tmp_path):
    src = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), src)
    out_dir = tmp_path / "out"
    status, _, stderr = torch_resnet.run_converter(["resnet101", str(src), str(out_dir)])
    # ResNet-50 has 6 blocks in layer3, ResNet-101 has 23: block 6 is the first difference.
    assert_one_line_error(status, stderr, str(src), "missing keys layer3.6.conv1.weight")
    assert_nothing_written(out_dir)


def test_wrong_shape_is_named(tmp_path):
    state = dict(torch_resnet.torch_resnet101().state_dict())
    state["layer2.1.conv2.weight"] = torch.zeros(128, 128, 1, 1)
    src = tmp_path / "bad.pth"
    torch.save(state, src)
    out_dir = tmp_path / "out"
    status, _, stderr = torch_resnet.run_converter(["resnet101", str(src), str(out_dir)])
    assert_one_line_error(
        status, stderr, "layer2.1.conv2.weight has shape (128, 128, 1, 1)", "expected (128, 128, 3, 3)"
    )
    assert_nothing_written(out_dir)


def test_bad_sources_are_named(tmp_path):
    out_dir = tmp_path / "out"
    missing = tmp_path / "missing.pth"
    status, _, stderr = torch_resnet.run_converter(["resnet101", str(missing), str(out_dir)])
    assert_one_line_error(status, stderr, str(missing), "no such file")

    a_list = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], a_list)
    status, _, stderr = torch_resnet.run_converter(["resnet101", str(a_list), str(out_dir)])
    assert_one_line_error(status, stderr, str(a_list), "not a state dict")

    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    status, _, stderr = torch_resnet.run_converter(["resnet101", str(text), str(out_dir)])
    assert_one_line_error(status, stderr, str(text), "not a PyTorch file")
    assert_nothing_written(out_dir)


def test_a_folder_of_user_files_is_refused_even_with_force(tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "keep.txt").write_text("mine")
    for extra in ([], ["--force"]):
        status, _, stderr = torch_resnet.run_converter(
            ["resnet101", str(torch_resnet.saved_state_dict()), str(out_dir), *extra]
        )
        assert_one_line_error(status, stderr, str(out_dir), "refusing to replace it")
        assert [p.name for p in out_dir.iterdir()] == ["keep.txt"]
        assert (out_dir / "keep.txt").read_text() == "mine"


def test_source_and_torchvision_weights_are_exclusive(tmp_path):
    out_dir = tmp_path / "out"
    status, _, stderr = torch_resnet.run_converter(["resnet101", str(out_dir)])
    assert_one_line_error(status, stderr, "--torchvision-weights")
    status, _, stderr = torch_resnet.run_converter(
        ["resnet101", "a.pth", str(out_dir), "--torchvision-weights", "IMAGENET1K_V1"]
    )
    assert_one_line_error(status, stderr, "a.pth", "not both")
    assert_nothing_written(out_dir)


def test_torchvision_weights_from_hub_cache(tmp_path, monkeypatch):
    # No internet here: place a file where torch's hub cache looks for IMAGENET1K_V1.
    torch_home = tmp_path / "torch_home"
    cached = torch_home / "hub" / "checkpoints" / V1_FILE_NAME
    cached.parent.mkdir(parents=True)
    os.symlink(torch_resnet.saved_state_dict(), cached)
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    out_dir = tmp_path / "out"
    out_dir.mkdir()  # --force replaces it
    status, stdout, stderr = torch_resnet.run_converter(
        ["resnet101", str(out_dir), "--torchvision-weights", "IMAGENET1K_V1", "--force"]
    )
    assert status == 0, stderr
    # The stand-in's hash differs from the one in torchvision's file name.
    assert "warning:" in stdout and "63fe2227" in stdout
    params, metadata = load_params(out_dir)
    assert metadata["torchvision_weights"] == "ResNet101_Weights.IMAGENET1K_V1"
    assert metadata["source_file"] == V1_FILE_NAME
    np.testing.assert_array_equal(
        params["bn1"]["mean"], torch_resnet.torch_resnet101().bn1.running_mean.numpy()
    )


def test_failed_download_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    out_dir = tmp_path / "out"
    status, _, stderr = torch_resnet.run_converter(
        ["resnet101", str(out_dir), "--torchvision-weights", "IMAGENET1K_V2"]
    )
    assert_one_line_error(
        status,
        stderr,
        "cannot download torchvision IMAGENET1K_V2",
        "resnet101-cd907fc2.pth",
        "pass it as SRC",
    )
    assert_nothing_written(out_dir)


def test_command_line_exit_status(tmp_path):
    missing = tmp_path / "missing.pth"
    result = subprocess.run(
        [sys.executable, "convert/from_torch.py", "resnet101", str(missing), str(tmp_path / "out")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_one_line_error(result.returncode, result.stderr, str(missing), "no such file")
