"""``convert/from_torch.py ifcnn``: metadata, parity check, and every input error."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from convert.from_torch import main as convert_main
from ifcnn_jax.io.checkpoints import load_params

REPO = Path(__file__).resolve().parents[1]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.fixture()
def released_state(release_dir):
    return torch.load(release_dir / "snapshots" / "IFCNN-SUM.pth", map_location="cpu", weights_only=True)


def test_converted_checkpoint_has_weights_and_metadata(release_dir, tmp_path, capsys):
    src = release_dir / "snapshots" / "IFCNN-MEAN.pth"
    assert convert_main(["ifcnn", str(src), str(tmp_path / "out"), "--verify"]) == 0
    printed = capsys.readouterr().out
    assert "largest absolute difference vs PyTorch" in printed
    diff = float(printed.split("= ")[1].split()[0])
    assert diff <= 1e-4
    params, metadata = load_params(tmp_path / "out")
    assert metadata["kind"] == "ifcnn" and metadata["fuse_rule"] == "mean"
    assert metadata["source_file"] == "IFCNN-MEAN.pth"
    assert metadata["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    state = torch.load(src, map_location="cpu", weights_only=True)
    # OIHW -> HWIO, and BatchNorm names.
    np.testing.assert_array_equal(
        params["conv2"]["conv"]["kernel"], state["conv2.conv.weight"].numpy().transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(params["conv3"]["bn"]["var"], state["conv3.bn.running_var"].numpy())
    np.testing.assert_array_equal(params["conv4"]["bias"], state["conv4.bias"].numpy())
    assert _leftovers(tmp_path) == ["out"]


def _run(args, tmp_path):
    """Runs the converter as a user would; returns (exit code, stderr)."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "convert" / "from_torch.py"), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    return proc.returncode, proc.stderr


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing", "no such file"),
        ("not_a_state_dict", "not a state dict"),
        ("not_torch", "not a PyTorch file"),
        ("missing_key", "missing keys conv3.bn.running_mean"),
        ("unexpected_key", "unexpected keys fc.weight"),
        (
            "wrong_shape",
            r"conv2.conv.weight has shape \(64, 64, 5, 5\) in the file, expected \(64, 64, 3, 3\)",
        ),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(released_state, tmp_path, case, message):
    state = dict(released_state)
    src = tmp_path / "IFCNN-MAX-variant.pth"
    if case == "not_a_state_dict":
        torch.save([state["conv1.weight"]], src)
    elif case == "not_torch":
        src.write_text("this is not a checkpoint\n")
    elif case == "missing_key":
        del state["conv3.bn.running_mean"]
        torch.save(state, src)
    elif case == "unexpected_key":
        state["fc.weight"] = torch.zeros(2)
        torch.save(state, src)
    elif case == "wrong_shape":
        state["conv2.conv.weight"] = torch.zeros(64, 64, 5, 5)
        torch.save(state, src)
    out = tmp_path / "converted"
    code, stderr = _run(["ifcnn", str(src), str(out)], tmp_path)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert re.search(message, lines[0]), lines[0]
    assert not out.exists()
    assert not any(p.name.startswith(".converted") for p in tmp_path.iterdir())


def test_an_existing_checkpoint_needs_force_and_user_files_are_never_replaced(release_dir, tmp_path):
    src = release_dir / "snapshots" / "IFCNN-MAX.pth"
    out = tmp_path / "out"
    assert convert_main(["ifcnn", str(src), str(out)]) == 0
    code, stderr = _run(["ifcnn", str(src), str(out)], tmp_path)
    assert code == 2 and "already exists; pass --force" in stderr
    assert convert_main(["ifcnn", str(src), str(out), "--force"]) == 0
    _, metadata = load_params(out)
    assert metadata["fuse_rule"] == "max"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "keep.txt").write_text("user data")
    code, stderr = _run(["ifcnn", str(src), str(mine), "--force"], tmp_path)
    assert code == 2 and "not an ifcnn-jax checkpoint; refusing" in stderr
    assert [p.name for p in mine.iterdir()] == ["keep.txt"]
    assert (mine / "keep.txt").read_text() == "user data"


def test_rule_from_flag_when_the_name_does_not_say(released_state, tmp_path):
    src = tmp_path / "weights.pth"
    torch.save(released_state, src)
    code, stderr = _run(["ifcnn", str(src), str(tmp_path / "a")], tmp_path)
    assert code == 2 and "pass --fuse-rule" in stderr
    assert convert_main(["ifcnn", str(src), str(tmp_path / "b"), "--fuse-rule", "sum"]) == 0
    assert load_params(tmp_path / "b")[1]["fuse_rule"] == "sum"


def test_verify_failure_writes_nothing(released_state, tmp_path, monkeypatch, capsys):
    import convert.torch_reference as reference  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    src = tmp_path / "IFCNN-SUM.pth"
    torch.save(released_state, src)
    real = reference.run_reference
    monkeypatch.setattr(reference, "run_reference", lambda *a: real(*a) + 1e-3)
    assert convert_main(["ifcnn", str(src), str(tmp_path / "out"), "--verify"]) == 2
    assert "verification failed" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_package_imports_and_fuses_without_torch(tmp_path):
    # A meta-path hook makes 'import torch' fail, as on a machine without PyTorch.
    script = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == 'torch' or name.startswith('torch.') or name.startswith('torchvision'):
            raise ImportError('torch is not installed')
sys.meta_path.insert(0, NoTorch())
import numpy as np
import ifcnn_jax
from ifcnn_jax.cli import fuse as cli  # the command-line module too
model = ifcnn_jax.new_ifcnn('max'); model.eval()
out = ifcnn_jax.fuse(model, [np.zeros((9, 11), np.uint8), np.full((9, 11), 200, np.uint8)], 'medical')
assert out.shape == (9, 11) and 'torch' not in sys.modules
print('ok')
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("ok")
