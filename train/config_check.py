"""Checks a training config before anything is built or compiled.

Every problem is an ``IFCNNError`` with one line naming the key and its value, so
``python -m train.main`` can print it instead of failing minutes later inside JAX.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import ml_collections

from ifcnn_jax.errors import IFCNNError

LR_SCHEDULES = ("constant", "cosine")
DATA_SOURCES = ("tfds", "folder", "skimage")


def _schema() -> ml_collections.ConfigDict:
    from train.configs import default  # noqa: PLC0415 - lazy: validation stays light and runs before JAX starts

    return default.get_config()


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, (ml_collections.ConfigDict, dict)):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _fail(key: str, value: Any, problem: str) -> None:
    raise IFCNNError(f"config.{key}={value!r}: {problem}")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, (tuple, list)):
        return "sequence"
    return type(value).__name__


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ``IFCNNError`` for a missing, unknown, mistyped or out-of-range value."""
    expected, got = _flatten(_schema()), _flatten(config)
    for key in expected:
        if key not in got:
            raise IFCNNError(f"config.{key} is missing (see train/configs/default.py)")
    for key, value in got.items():
        if key not in expected:
            _fail(key, value, "unknown key (see train/configs/default.py for the valid ones)")
        want, have = _kind(expected[key]), _kind(value)
        if want != have and not (want == "float" and have == "int"):
            _fail(key, value, f"expected {want}, got {have}")

    def at_least(key: str, low: float) -> None:
        value = got[key]
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= low):
            _fail(key, value, f"must be a finite number >= {low}")

    def one_of(key: str, choices: tuple[str, ...]) -> None:
        if got[key] not in choices:
            _fail(key, got[key], f"must be one of {', '.join(choices)}")

    def folder(key: str, required: bool = False) -> None:
        value = got[key]
        if not value:
            if required:
                _fail(key, value, "must name a folder")
            return
        if not Path(value).is_dir():
            _fail(key, value, "no such folder")

    one_of("data.source", DATA_SOURCES)
    source = got["data.source"]
    if source == "tfds":
        for key in ("data.tfds_name", "data.train_split", "data.eval_split"):
            if not got[key]:
                _fail(key, got[key], "must not be empty when data.source='tfds'")
    elif source == "folder":
        folder("data.folder", required=True)
        folder("data.depth_folder")
        folder("data.eval_folder")
        if not got["data.eval_folder"]:
            at_least("data.eval_holdout", 1)
    else:
        from ifcnn_jax.data.photos import SKIMAGE_PHOTOS  # noqa: PLC0415 - lazy: validation stays light and runs before JAX starts

        for key in ("data.skimage_train", "data.skimage_eval"):
            names = got[key]
            if not names:
                _fail(key, names, "must list scikit-image photos when data.source='skimage'")
            for name in names:
                if name not in SKIMAGE_PHOTOS:
                    _fail(key, names, f"unknown photo {name!r}; choose from {', '.join(SKIMAGE_PHOTOS)}")
    from ifcnn_jax.data.synthesis import FOCUS_MAP_KINDS  # noqa: PLC0415 - lazy: validation stays light and runs before JAX starts

    one_of("data.focus_map", ("auto",) + FOCUS_MAP_KINDS)
    at_least("data.num_sources", 2)
    at_least("data.blur_radius_min", 1)
    if got["data.blur_radius_max"] < got["data.blur_radius_min"]:
        _fail(
            "data.blur_radius_max",
            got["data.blur_radius_max"],
            f"must be >= data.blur_radius_min={got['data.blur_radius_min']}",
        )
    at_least("data.crop_size", 8)
    if not 0 <= got["data.colour_augment"] <= 1:
        _fail("data.colour_augment", got["data.colour_augment"], "must be a probability in [0, 1]")
    for key in ("data.num_threads", "data.prefetch", "data.cache_size", "data.eval_holdout"):
        at_least(key, 0)

    from ifcnn_jax.model import FUSE_RULES  # noqa: PLC0415 - lazy: validation stays light and runs before JAX starts

    one_of("fuse_rule", FUSE_RULES)
    one_of("conv1_init", ("random", "dct"))
    one_of("conv4_init", ("he", "zeros"))
    one_of("batch_norm", ("batch", "frozen"))
    init_model = got["init_model"]
    if init_model and not Path(init_model).exists():
        from ifcnn_jax.io.model_files import released_name  # noqa: PLC0415 - lazy: validation stays light and runs before JAX starts
        from ifcnn_jax.io.weight_files import shipped_path  # noqa: PLC0415 - lazy: validation stays light and runs before JAX starts

        if not released_name(str(init_model)) and shipped_path(str(init_model)) is None:
            _fail("init_model", init_model, "no such model folder or file, nor a model name")
    conv1 = got["conv1_checkpoint"]
    if conv1 and str(conv1).lower().endswith((".pth", ".pt")) and not Path(conv1).is_dir():
        if not Path(conv1).is_file():  # one of the authors' released IFCNN-*.pth files
            _fail("conv1_checkpoint", conv1, "no such file")
    else:
        folder("conv1_checkpoint")
    folder("resnet_checkpoint")
    at_least("pixel_weight", 0)
    at_least("perceptual_weight", 0)
    if got["pixel_weight"] == 0 and (got["perceptual_weight"] == 0 or not got["resnet_checkpoint"]):
        _fail("pixel_weight", got["pixel_weight"], "is 0 and the perceptual term is off: nothing to train on")
    taps, tap_weights = tuple(got["perceptual_taps"]), tuple(got["perceptual_tap_weights"])
    from ifcnn_jax.resnet import TAPS  # noqa: PLC0415 - lazy: validation stays light and runs before JAX starts

    if not taps:
        _fail("perceptual_taps", taps, f"must name at least one of {', '.join(TAPS)}")
    for tap in taps:
        if tap not in TAPS:
            _fail("perceptual_taps", taps, f"unknown tap {tap!r}; choose from {', '.join(TAPS)}")
    if len(tap_weights) != len(taps) or any(not isinstance(w, (int, float)) or w < 0 for w in tap_weights):
        _fail(
            "perceptual_tap_weights",
            tap_weights,
            f"must be {len(taps)} non-negative number(s), one per tap of perceptual_taps",
        )

    from train.step import OPTIMIZERS  # noqa: PLC0415 - lazily: it imports JAX and optax

    one_of("optimizer", tuple(OPTIMIZERS))
    one_of("lr_schedule", LR_SCHEDULES)
    if not (math.isfinite(got["learning_rate"]) and got["learning_rate"] > 0):
        _fail("learning_rate", got["learning_rate"], "must be a finite number > 0")
    for key in (
        "warmup_steps",
        "weight_decay",
        "grad_clip_norm",
        "steps_per_run",
        "eval_every_steps",
        "eval_crop_size",
        "grid_examples",
    ):
        at_least(key, 0)
    if not 0 <= got["momentum"] < 1:
        _fail("momentum", got["momentum"], "must be in [0, 1)")
    for key in (
        "batch_size",
        "num_train_steps",
        "checkpoint_every_steps",
        "keep_checkpoints",
        "eval_examples",
        "eval_batch_size",
        "log_every_steps",
    ):
        at_least(key, 1)
    if 0 < got["eval_crop_size"] < 16:
        _fail("eval_crop_size", got["eval_crop_size"], "must be 0 (whole photos) or >= 16")
    folder("eval_pairs_folder")


def check_parallelism(config: ml_collections.ConfigDict, device_count: int, process_count: int) -> None:
    """The global batch must split evenly over devices (and so over processes)."""
    if config.batch_size % device_count:
        raise IFCNNError(
            f"config.batch_size={config.batch_size}: must be a multiple of the "
            f"{device_count} devices of this run"
        )
    if config.batch_size % process_count:
        raise IFCNNError(
            f"config.batch_size={config.batch_size}: must be a multiple of the "
            f"{process_count} processes of this run"
        )
