"""The train step and what it is made of: the train state, the optimiser table, the
loss, the jitted data-parallel step, the mesh, and the checks that a state is sound.

Parallelism: a 1-D device mesh with axis ``data`` spans every device of every process.
Each global batch is sharded along ``data``; parameters, BatchNorm statistics and the
optimiser state are replicated. The train step is ``jax.jit`` with these shardings
(no pmap), so BatchNorm's batch statistics are means over the global batch and a run
gives the same parameters on 1 device or on many (up to float rounding).

The train state is a plain pytree ``{"step", "params", "batch_stats", "opt_state"}``;
``params`` and ``batch_stats`` are the pure-dict trees of the IFCNN module (the layout
``ifcnn_jax.io.checkpoints.save_params`` exports). ``bench/`` times this same step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding

from ifcnn_jax import param_trees
from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.losses import perceptual_loss, pixel_loss
from ifcnn_jax.model import IFCNN, load, new_ifcnn
from ifcnn_jax.resnet import IMAGENET_MEAN, IMAGENET_STD
from train.conv1_filters import dct_filter_bank

DATA_AXIS = "data"


TrainState = dict[str, Any]


# A loss (MSE in the model's normalised space, where images span about [-2.1, 2.6])
# above this means the weights have blown up even if every number is still finite:
# a model with garbage output inside the image range scores under 25.
DIVERGED_LOSS = 1e3


@functools.cache
def _templates(fuse_rule: str) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """The module structure of IFCNN and State templates for its Params and BatchStats,
    built once without allocating (shapes only)."""
    abstract = nnx.eval_shape(lambda: IFCNN(fuse_rule, rngs=nnx.Rngs(0)))
    graphdef, params, stats = nnx.split(abstract, nnx.Param, nnx.BatchStat)
    return graphdef, params, stats


def merge_model(fuse_rule: str, params: dict, batch_stats: dict) -> IFCNN:
    """An IFCNN module holding the pure-dict ``params`` and ``batch_stats`` (works under
    jit: the arrays may be tracers)."""
    graphdef, param_template, stat_template = _templates(fuse_rule)
    param_state = jax.tree.map(lambda x: x, param_template)
    stat_state = jax.tree.map(lambda x: x, stat_template)
    nnx.replace_by_pure_dict(param_state, params)
    nnx.replace_by_pure_dict(stat_state, batch_stats)
    return nnx.merge(graphdef, param_state, stat_state)


def initial_model(config: ml_collections.ConfigDict) -> tuple[dict, dict]:
    """``(params, batch_stats)`` of a fresh IFCNN as pure dicts of NumPy arrays: conv1
    from ``config.conv1_checkpoint`` when set, else as ``config.conv1_init`` says
    (``random``: He-initialised; ``dct``: the fixed bank of ``train.conv1_filters``), or
    everything from ``config.init_model`` when set."""
    if config.init_model:
        model = load(config.init_model, fuse_rule=config.fuse_rule)
        params, stats = param_trees.split(model)
        return jax.tree.map(np.asarray, params), jax.tree.map(np.asarray, stats)
    model = new_ifcnn(config.fuse_rule, conv1_from=config.conv1_checkpoint or None, seed=config.seed)
    if not config.conv1_checkpoint and config.conv1_init == "dct":
        model.conv1.kernel[...] = jnp.asarray(dct_filter_bank())
    if config.conv4_init == "zeros":
        # The reference's He init gives the 1x1 output layer (3 outputs) weights of std
        # 0.82: the first outputs are ~4 normalised units off and Adam spends the first
        # thousand steps shrinking them (docs/training_notes.md).
        model.conv4.kernel[...] = jnp.zeros_like(model.conv4.kernel[...])
    params, stats = param_trees.split(model)
    return jax.tree.map(np.asarray, params), jax.tree.map(np.asarray, stats)


def initial_state(config: ml_collections.ConfigDict) -> tuple[TrainState, optax.GradientTransformation]:
    """The train state of a fresh run as host (NumPy) arrays, and its optimiser."""
    params, batch_stats = initial_model(config)
    optimizer = make_optimizer(config, params)
    state = {
        "step": np.zeros((), np.int32),
        "params": params,
        "batch_stats": batch_stats,
        "opt_state": jax.tree.map(np.asarray, optimizer.init(params)),
    }
    return state, optimizer


def normalize(images: jax.Array) -> jax.Array:
    """uint8 RGB (0-255) -> the multi-focus model's input space: RGB/255, then ImageNet
    mean/std normalisation (what the released models expect)."""
    unit = images.astype(jnp.float32) / 255.0
    return (unit - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def denormalize(x: jax.Array) -> jax.Array:
    """The model's output space -> RGB on 0-1, clipped (not rounded)."""
    return jnp.clip(x * jnp.asarray(IMAGENET_STD) + jnp.asarray(IMAGENET_MEAN), 0.0, 1.0)


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """Linear warm-up from 0 to ``learning_rate`` over ``warmup_steps``, then constant or
    a cosine decay to 0 at ``num_train_steps``."""
    warmup = min(config.warmup_steps, max(config.num_train_steps - 1, 0))
    if config.lr_schedule == "constant":
        after = optax.constant_schedule(config.learning_rate)
    else:
        after = optax.cosine_decay_schedule(config.learning_rate, max(config.num_train_steps - warmup, 1))
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, config.learning_rate, warmup), after], [warmup])


def trainable_labels(params: dict, freeze_conv1: bool) -> dict:
    """``"frozen"`` for conv1's kernel (when frozen) and ``"trained"`` elsewhere, in the
    layout of ``params`` (the label tree of ``optax.multi_transform``)."""

    def labelled(sub: Any, label: str) -> Any:
        return jax.tree.map(lambda _: label, sub)

    return {
        name: labelled(sub, "frozen" if freeze_conv1 and name == "conv1" else "trained")
        for name, sub in params.items()
    }


# The optimisers by their config name: (schedule, config) -> the base transformation.
# The one table: config validation takes its names from here.
OPTIMIZERS: dict[str, Callable[[optax.Schedule, ml_collections.ConfigDict], optax.GradientTransformation]] = {
    "adam": lambda schedule, config: optax.adam(schedule),
    "adamw": lambda schedule, config: optax.adamw(schedule, weight_decay=config.weight_decay),
    "sgd": lambda schedule, config: optax.sgd(schedule, momentum=config.momentum or None),
}


def make_optimizer(config: ml_collections.ConfigDict, params: dict) -> optax.GradientTransformation:
    """The optimiser named by ``config.optimizer`` (a key of ``OPTIMIZERS``), with
    optional gradient clipping; conv1 gets zero updates when ``config.freeze_conv1``
    (an optax mask)."""
    if config.optimizer not in OPTIMIZERS:
        raise IFCNNError(f"config.optimizer={config.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    schedule = learning_rate_schedule(config)
    base = OPTIMIZERS[config.optimizer](schedule, config)
    if config.grad_clip_norm > 0:
        base = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), base)
    return optax.multi_transform(
        {"trained": base, "frozen": optax.set_to_zero()}, trainable_labels(params, config.freeze_conv1)
    )


def make_loss_fn(config: ml_collections.ConfigDict, resnet_graphdef: nnx.GraphDef | None) -> Callable:
    """``loss(params, batch_stats, sources, target, resnet_state) -> (loss, aux)`` with
    sources (N, B, h, w, 3) and target (B, h, w, 3) in the model's normalised space."""
    fuse_rule = config.fuse_rule
    taps = tuple(config.perceptual_taps)
    tap_weights = tuple(float(w) for w in config.perceptual_tap_weights)
    pixel_weight, perceptual_weight = float(config.pixel_weight), float(config.perceptual_weight)

    freeze_conv1 = bool(config.freeze_conv1)
    frozen_batch_norm = config.batch_norm == "frozen"

    def loss_fn(params, batch_stats, sources, target, resnet_state):

        if freeze_conv1:
            # Its updates are masked anyway; no gradient also spares XLA that convolution.
            params = {**params, "conv1": jax.lax.stop_gradient(params["conv1"])}
        model = merge_model(fuse_rule, params, batch_stats)
        if frozen_batch_norm:
            # Normalise as at inference, so that the weights adapt to the statistics
            # the model will be used with (docs/training_notes.md, "frozen BatchNorm").
            model.eval()
            fused = model(sources)
            new_stats = batch_stats
        else:
            model.train()
            fused = model(sources)
            new_stats = nnx.to_pure_dict(nnx.state(model, nnx.BatchStat))
        pixel = pixel_loss(fused, target)
        if resnet_graphdef is not None:
            resnet = nnx.merge(resnet_graphdef, resnet_state)
            perceptual = perceptual_loss(fused, target, resnet, taps=taps, weights=tap_weights)
        else:
            perceptual = jnp.zeros((), jnp.float32)
        loss = pixel_weight * pixel + perceptual_weight * perceptual
        return loss, {"batch_stats": new_stats, "pixel_loss": pixel, "perceptual_loss": perceptual}

    return loss_fn


def make_train_step(
    config: ml_collections.ConfigDict,
    optimizer: optax.GradientTransformation,
    resnet_graphdef: nnx.GraphDef | None,
) -> Callable:
    """``step(state, batch, resnet_state) -> (state, metrics)``; ``batch`` holds uint8
    ``sources`` (B, N, h, w, 3) and ``target`` (B, h, w, 3)."""
    loss_fn = make_loss_fn(config, resnet_graphdef)

    def train_step(state: TrainState, batch: dict, resnet_state: Any) -> tuple[TrainState, dict]:
        sources = normalize(jnp.moveaxis(batch["sources"], 1, 0))
        target = normalize(batch["target"])
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], state["batch_stats"], sources, target, resnet_state
        )
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        new_state = {
            "step": state["step"] + 1,
            "params": optax.apply_updates(state["params"], updates),
            "batch_stats": aux["batch_stats"],
            "opt_state": opt_state,
        }
        step_metrics = {
            "loss": loss,
            "pixel_loss": aux["pixel_loss"],
            "perceptual_loss": aux["perceptual_loss"],
            "grad_norm": optax.tree.norm(grads),
            "state_finite": tree_is_finite(new_state),
        }
        return new_state, step_metrics

    return train_step


def tree_is_finite(tree: Any) -> jax.Array:
    """True when every floating-point leaf of ``tree`` is finite (a scalar bool)."""
    leaves = [
        jnp.all(jnp.isfinite(x))
        for x in jax.tree.leaves(tree)
        if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating)
    ]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def make_probe_fn(fuse_rule: str) -> Callable:
    """``probe(params, batch_stats, sources, target) -> (finite, loss)``: whether the
    state is finite, and the inference-mode MSE on one fixed batch in the normalised
    space (not clipped, so blown-up weights show). Run before every save, so no
    checkpoint holds a ruined state, and on resume."""

    def probe(params, batch_stats, sources, target):
        model = merge_model(fuse_rule, params, batch_stats)
        model.eval()
        fused = model(normalize(jnp.moveaxis(sources, 1, 0)))
        loss = jnp.mean(jnp.square(fused - normalize(target)))
        return tree_is_finite((params, batch_stats)) & jnp.isfinite(loss), loss

    return probe


def make_fuse_fn(fuse_rule: str) -> Callable:
    """``fuse(params, batch_stats, sources uint8 (B, N, h, w, 3)) -> (B, h, w, 3)``
    float on 0-1, with BatchNorm in inference mode (running statistics)."""

    def fuse(params, batch_stats, sources):
        model = merge_model(fuse_rule, params, batch_stats)
        model.eval()
        return denormalize(model(normalize(jnp.moveaxis(sources, 1, 0))))

    return fuse


def make_mesh() -> Mesh:
    """A 1-D mesh over every device of every process, axis ``data``."""
    return Mesh(np.asarray(jax.devices()), (DATA_AXIS,))


def replicate(tree: Any, sharding: NamedSharding) -> Any:
    """Host arrays (identical on every process) -> global arrays with ``sharding``."""

    def put(x):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def shard_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """This process's slice of a global batch -> global arrays sharded on the batch axis."""
    return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def to_host(x: jax.Array) -> np.ndarray:
    """A replicated global array -> NumPy (this process's copy)."""
    return np.asarray(x.addressable_data(0))
