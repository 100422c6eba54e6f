"""Training end to end: the demo config, exact resume, device-count independence (1
device, 8 devices, 2 processes x 2 devices), the perceptual term, the NaN guard, the NYU
path on mock data, and config errors."""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds
from flax import nnx
from skimage.metrics import peak_signal_noise_ratio

import ifcnn_jax
from ifcnn_jax.data.photos import SkimageCollection
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.inference import forward
from ifcnn_jax.io.checkpoints import load_params, save_params
from ifcnn_jax.io.images import write_image
from ifcnn_jax.resnet import IMAGENET_MEAN, IMAGENET_STD, ResNet101
from train import checkpointing, input_pipeline
from train import step as train_step
from train import train as training
from train.config_check import check_parallelism, validate_config
from train.configs import default, demo
from train.conv1_filters import dct_filter_bank

REPO_ROOT = Path(__file__).resolve().parents[1]

# A tiny version of the demo: every run below trains on these settings.
TINY = {
    "data.skimage_train": ("astronaut", "motorcycle_left"),
    "data.skimage_eval": ("coffee",),
    "data.num_threads": 1,
    "batch_size": 8,
    "num_train_steps": 12,
    "warmup_steps": 3,
    "checkpoint_every_steps": 6,
    "eval_every_steps": 0,
    "eval_examples": 2,
    "eval_crop_size": 32,
    "eval_batch_size": 2,
    "grid_examples": 2,
    "log_every_steps": 1,
    "progress_bar": False,
}


def tiny_config(**overrides):
    config = demo.get_config()
    for key, value in {**TINY, **overrides}.items():
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config


def cli_overrides(**overrides) -> list[str]:
    return [
        f"--config.{k}={v!r}" if isinstance(v, tuple) else f"--config.{k}={v}"
        for k, v in {**TINY, **overrides}.items()
    ]


def read_jsonl(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def assert_params_close(got: dict, want: dict, rtol: float) -> None:
    flat_got, flat_want = (
        jax.tree_util.tree_flatten_with_path(got)[0],
        jax.tree_util.tree_flatten_with_path(want)[0],
    )
    assert [p for p, _ in flat_got] == [p for p, _ in flat_want]
    for (path, a), (_, b) in zip(flat_got, flat_want):
        scale = max(float(np.abs(b).max()), 1e-12)
        assert float(np.abs(a - b).max()) / scale <= rtol, jax.tree_util.keystr(path)


def run_cli(workdir: Path, *extra: str, devices: int = 1, timeout: int = 300) -> subprocess.Popen:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu")
    command = [
        sys.executable,
        "-m",
        "train.main",
        "--config",
        "train/configs/demo.py",
        "--workdir",
        str(workdir),
        *extra,
    ]
    return subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """The tiny demo trained 12 steps in one go on this process's single CPU device."""
    workdir = tmp_path_factory.mktemp("straight")
    scalars = training.train_and_evaluate(tiny_config(), str(workdir))
    params, metadata = load_params(workdir / "model")
    return workdir, params, metadata, scalars


def test_demo_run_trains_and_exports_a_fusable_model(straight_run, capsys):

    workdir, params, metadata, scalars = straight_run
    assert metadata["kind"] == "ifcnn" and metadata["fuse_rule"] == "max" and metadata["step"] == 12
    losses = [r["train/loss"] for r in read_jsonl(workdir) if "train/loss" in r]
    assert len(losses) == 12 and np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    assert {"eval/psnr", "eval/ssim", "eval/psnr_average_baseline"} <= set(scalars)
    assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert (workdir / "eval" / "synthetic_step0000012.png").is_file()
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["12", "6"]

    # conv1 is frozen (the DCT bank of the demo); every other layer has moved.

    np.testing.assert_array_equal(params["conv1"]["kernel"], dct_filter_bank())
    initial, _ = train_step.initial_model(tiny_config())
    assert not np.allclose(params["conv3"]["conv"]["kernel"], initial["conv3"]["conv"]["kernel"])
    assert not np.allclose(params["conv2"]["bn"]["mean"], 0)

    # The logged validation scores, recomputed from the exported model through the
    # inference path and scikit-image's PSNR on BT.601 luminance.

    model = ifcnn_jax.load(str(workdir / "model"))
    eval_set = input_pipeline.eval_examples(
        input_pipeline.make_collections(tiny_config().data)[1], tiny_config()
    )
    normalised = (np.moveaxis(eval_set["sources"], 1, 0) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    fused_unit = np.clip(np.asarray(forward(model, normalised)) * IMAGENET_STD + IMAGENET_MEAN, 0, 1)
    fused_8bit = np.round(fused_unit * 255.0)
    average_8bit = np.round(eval_set["sources"].astype(np.float64).mean(axis=1))
    luma = lambda rgb: rgb @ np.array([0.299, 0.587, 0.114])
    targets = luma(eval_set["target"].astype(np.float64))
    for images, key in ((fused_8bit, "eval/psnr"), (average_8bit, "eval/psnr_average_baseline")):
        expected = np.mean(
            [peak_signal_noise_ratio(t, luma(f), data_range=255) for t, f in zip(targets, images)]
        )
        assert scalars[key] == pytest.approx(expected, abs=0.02)

    photo = SkimageCollection(["coffee"])[0].image[:40, :48]
    fused = ifcnn_jax.fuse(model, [photo, photo[:, ::-1].copy()], task="multifocus")
    assert fused.shape == photo.shape and fused.dtype == np.uint8


def test_resume_gives_the_same_parameters(straight_run, tmp_path):
    _, straight_params, _, _ = straight_run
    workdir = tmp_path / "resumed"
    training.train_and_evaluate(tiny_config(steps_per_run=6), str(workdir))
    assert not (workdir / "model").exists()
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["6"]
    data_state = json.loads((workdir / "checkpoints" / "6" / "data" / "metadata").read_text())
    assert data_state == {"next_index": 6}
    training.train_and_evaluate(tiny_config(steps_per_run=6), str(workdir))
    resumed_params, metadata = load_params(workdir / "model")
    assert metadata["step"] == 12
    assert_params_close(resumed_params, straight_params, rtol=1e-6)


def test_a_killed_run_resumes_from_its_last_complete_checkpoint(tmp_path):

    settings = {"num_train_steps": 40, "checkpoint_every_steps": 1, "keep_checkpoints": 3}
    workdir = tmp_path / "killed"
    process = run_cli(workdir, *cli_overrides(**settings))
    checkpoints = workdir / "checkpoints"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and process.poll() is None:
        if checkpoints.is_dir() and sum(p.name.isdigit() for p in checkpoints.iterdir()) >= 2:
            break
        time.sleep(0.02)
    process.kill()  # SIGKILL: no chance to clean up, possibly in the middle of a save
    process.communicate()
    assert not (workdir / "model").exists(), "the run ended before it could be killed"
    resumed = run_cli(workdir, *cli_overrides(**settings))
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert "resuming from the checkpoint of step" in out
    straight = tmp_path / "straight"
    training.train_and_evaluate(tiny_config(**{**settings, "checkpoint_every_steps": 40}), str(straight))
    assert_params_close(load_params(workdir / "model")[0], load_params(straight / "model")[0], rtol=1e-6)


def test_eight_devices_give_the_same_parameters(straight_run, tmp_path):
    _, straight_params, _, _ = straight_run
    process = run_cli(tmp_path / "eight", *cli_overrides(), devices=8)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    params, _ = load_params(tmp_path / "eight" / "model")
    assert_params_close(params, straight_params, rtol=1e-5)


def test_two_processes_of_two_devices_give_the_same_parameters(straight_run, tmp_path):
    _, straight_params, _, _ = straight_run
    address = f"127.0.0.1:{free_port()}"
    processes = [
        run_cli(
            tmp_path / "multi",
            *cli_overrides(),
            "--coordinator_address",
            address,
            "--num_processes",
            "2",
            "--process_id",
            str(i),
            "--cpu_collectives",
            "gloo",
            devices=2,
        )
        for i in (0, 1)
    ]
    try:
        results = [p.communicate(timeout=300) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    for p, (_, err) in zip(processes, results):
        assert p.returncode == 0, err[-3000:]
    assert "exported the trained model" in results[0][0] and "exported" not in results[1][0]
    params, _ = load_params(tmp_path / "multi" / "model")
    assert_params_close(params, straight_params, rtol=1e-5)


def test_perceptual_loss_is_added_with_its_weight(tmp_path, capsys):

    # A random ResNet-101 stands in for the converted ImageNet one: the wiring is tested here,
    # the loss itself in tests/test_losses.py.
    resnet_dir = tmp_path / "resnet"
    state = nnx.to_pure_dict(nnx.state(ResNet101(rngs=nnx.Rngs(3))))
    save_params(resnet_dir, jax.tree.map(np.asarray, state), {"kind": "resnet101"})
    config = tiny_config(resnet_checkpoint=str(resnet_dir), perceptual_weight=0.5, num_train_steps=2)
    training.train_and_evaluate(config, str(tmp_path / "run"))
    assert "perceptual loss: on" in capsys.readouterr().out
    records = [r for r in read_jsonl(tmp_path / "run") if "train/loss" in r]
    for record in records:
        assert record["train/perceptual_loss"] > 0
        np.testing.assert_allclose(
            record["train/loss"],
            record["train/pixel_loss"] + 0.5 * record["train/perceptual_loss"],
            rtol=1e-6,
        )


def test_perceptual_loss_off_is_announced(straight_run):
    workdir, _, _, _ = straight_run
    records = [r for r in read_jsonl(workdir) if "train/loss" in r]
    assert all(r["train/perceptual_loss"] == 0 and r["train/loss"] == r["train/pixel_loss"] for r in records)


def tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    workdir = tmp_path / "nan"
    training.train_and_evaluate(
        tiny_config(num_train_steps=6, steps_per_run=2, checkpoint_every_steps=2), str(workdir)
    )
    good = tree_digest(workdir / "checkpoints" / "2")
    # An absurd learning rate blows the weights up at step 3; step 4's loss is not finite.
    exploding = tiny_config(
        num_train_steps=6,
        learning_rate=1e30,
        lr_schedule="constant",
        warmup_steps=0,
        checkpoint_every_steps=2,
    )
    with pytest.raises(training.TrainingDiverged, match=r"at step 4.*last good checkpoint \(step 2\)"):
        training.train_and_evaluate(exploding, str(workdir))
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2"]
    assert tree_digest(workdir / "checkpoints" / "2") == good
    assert not (workdir / "model").exists()


def _checkpoint_params(workdir: Path) -> dict[int, list[np.ndarray]]:
    """Every kept checkpoint's parameter arrays, read with Orbax directly."""

    found = {}
    for folder in sorted((workdir / "checkpoints").iterdir()):
        if folder.name.isdigit():
            restored = ocp.PyTreeCheckpointer().restore((folder / "state").absolute())
            found[int(folder.name)] = [np.asarray(x) for x in jax.tree.leaves(restored["params"])]
    return found


@pytest.mark.parametrize("optimizer, learning_rate", [("sgd", 1e6), ("adam", 1e30)])
def test_no_checkpoint_keeps_a_ruined_state_and_a_sane_resume_continues(tmp_path, optimizer, learning_rate):
    workdir = tmp_path / optimizer
    wild = tiny_config(
        optimizer=optimizer,
        learning_rate=learning_rate,
        lr_schedule="constant",
        warmup_steps=0,
        checkpoint_every_steps=2,
        num_train_steps=8,
    )
    with pytest.raises(training.TrainingDiverged, match="stopping"):
        training.train_and_evaluate(wild, str(workdir))
    for step, leaves in _checkpoint_params(workdir).items():
        # Independent of the guard's own test: the weights a fresh model starts from are
        # of order 1; every kept state must be finite and of that order.
        assert all(np.isfinite(x).all() and np.abs(x).max() < 100 for x in leaves), step
    sane = tiny_config(optimizer=optimizer, learning_rate=1e-3, checkpoint_every_steps=2, num_train_steps=8)
    scalars = training.train_and_evaluate(sane, str(workdir))
    assert math.isfinite(scalars["train/loss"]) and scalars["train/loss"] < 10
    params, metadata = load_params(workdir / "model")
    assert metadata["step"] == 8
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_resume_skips_a_ruined_checkpoint_from_an_older_version(tmp_path, capsys):
    workdir = tmp_path / "old"
    config = tiny_config(num_train_steps=6, checkpoint_every_steps=2, steps_per_run=2)
    training.train_and_evaluate(config, str(workdir))
    # What a version without the check could leave: a step-4 checkpoint of NaN weights.
    manager = checkpointing.checkpoint_manager(workdir, config)
    host_state, _ = train_step.initial_state(config)
    ruined = jax.tree.map(
        lambda x: np.full_like(x, np.nan) if np.asarray(x).dtype.kind == "f" else x, host_state
    )
    ruined["step"] = np.asarray(4, np.int32)
    checkpointing.save_checkpoint(manager, 4, ruined, {"next_index": 4})
    manager.wait_until_finished()
    manager.close()
    capsys.readouterr()
    training.train_and_evaluate(tiny_config(num_train_steps=6, checkpoint_every_steps=2), str(workdir))
    out = capsys.readouterr().out
    assert "checkpoint of step 4 holds a diverged state" in out
    assert "resuming from the checkpoint of step 2" in out
    params, metadata = load_params(workdir / "model")
    assert metadata["step"] == 6 and all(np.isfinite(x).all() for x in jax.tree.leaves(params))


def test_training_refuses_an_export_folder_of_user_files_before_training(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(IFCNNError, match="refusing to replace it"):
        training.train_and_evaluate(tiny_config(export_dir=str(precious)), str(tmp_path / "run"))
    assert [p.name for p in precious.iterdir()] == ["notes.txt"]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_nyu_config_runs_on_mock_data(tmp_path):

    config = default.get_config()
    for key, value in TINY.items():
        if not key.startswith("data.skimage"):
            target, *path = key.split(".")
            if path:
                config[target][path[0]] = value
            else:
                config[key] = value
    config.data.crop_size = 16
    config.num_train_steps = 2
    config.checkpoint_every_steps = 2
    # Real pairs for evaluation, in the Lytro naming (NAME-A / NAME-B).

    pairs = tmp_path / "pairs"
    pairs.mkdir()
    rng = np.random.default_rng(0)
    for name in ("one", "two"):
        for letter in "AB":
            write_image(pairs / f"{name}-{letter}.png", rng.integers(0, 256, (24, 28, 3), dtype=np.uint8))
    config.eval_pairs_folder = str(pairs)
    with tfds.testing.mock_data(num_examples=4):
        scalars = training.train_and_evaluate(config, str(tmp_path / "nyu"))
    _, metadata = load_params(tmp_path / "nyu" / "model")
    assert metadata["config"] == "default" and metadata["step"] == 2
    assert {"eval_real/sf", "eval_real/qabf", "eval_real/sf_average_baseline"} <= set(scalars)
    assert (tmp_path / "nyu" / "eval" / "real_step0000002.png").is_file()


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("batch_size", 0, "config.batch_size=0"),
        ("learning_rate", -1.0, "config.learning_rate=-1.0"),
        ("optimizer", "lion", "config.optimizer='lion'"),
        ("fuse_rule", "median", "config.fuse_rule='median'"),
        ("data.source", "ftp", "config.data.source='ftp'"),
        ("data.blur_radius_max", 1, "config.data.blur_radius_max=1"),
        ("data.crop_size", 4, "config.data.crop_size=4"),
        ("perceptual_taps", ("layer9",), "config.perceptual_taps"),
        ("perceptual_tap_weights", (1.0, 2.0), "config.perceptual_tap_weights"),
        ("resnet_checkpoint", "no/such/dir", "config.resnet_checkpoint='no/such/dir'"),
        ("data.skimage_train", ("lena",), "unknown photo 'lena'"),
        ("momentum", 1.5, "config.momentum=1.5"),
    ],
)
def test_bad_config_values_are_named(key, value, message):
    config = tiny_config()
    with config.unlocked():
        target = config
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    with pytest.raises(IFCNNError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        validate_config(config)


def test_config_structure_errors():
    config = tiny_config()
    with config.unlocked():
        config.batch_sise = 8
    with pytest.raises(IFCNNError, match="config.batch_sise=8: unknown key"):
        validate_config(config)
    config = tiny_config()
    with config.unlocked():
        del config["eval_seed"]
    with pytest.raises(IFCNNError, match="config.eval_seed is missing"):
        validate_config(config)
    raw = tiny_config().to_dict()
    raw["batch_size"] = "8"
    with pytest.raises(IFCNNError, match="config.batch_size='8': expected int, got str"):
        validate_config(ml_collections.ConfigDict(raw))
    folder_config = default.get_config()
    folder_config.data.source = "folder"
    with pytest.raises(IFCNNError, match="config.data.folder=''"):
        validate_config(folder_config)
    with pytest.raises(IFCNNError, match="multiple of the 8 devices"):
        check_parallelism(tiny_config(batch_size=12), 8, 2)
    for name in ("default", "demo", "folder"):
        module = __import__(f"train.configs.{name}", fromlist=["get_config"])
        config = module.get_config()
        if name == "folder":
            config.data.folder = str(REPO_ROOT)
        validate_config(config)


def test_cli_reports_a_bad_value_before_compiling(tmp_path):
    process = run_cli(tmp_path / "bad", "--config.batch_size=0")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == ["error: config.batch_size=0: must be a finite number >= 1"], err[-2000:]
    assert not (tmp_path / "bad").exists()
    process = run_cli(tmp_path / "bad", "--config.no_such_key=8")
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2
    assert [line for line in err.splitlines() if line.strip()] == [
        "error: the config has no key 'no_such_key'; see train/configs/default.py"
    ], err[-2000:]
