"""IFCNN training: one jitted, data-parallel train step, Orbax checkpoints that resume
exactly, periodic validation, and an export that ``ifcnn-fuse`` loads.

Parallelism: a 1-D device mesh with axis ``data`` spans every device of every process.
Each global batch is sharded along ``data``; parameters, BatchNorm statistics and the
optimiser state are replicated. The train step is ``jax.jit`` with these shardings
(no pmap), so BatchNorm's batch statistics are means over the global batch and a run
gives the same parameters on 1 device or on many (up to float rounding).

The train state is a plain pytree ``{"step", "params", "batch_stats", "opt_state"}``;
``params`` and ``batch_stats`` are the pure-dict trees of the IFCNN module (the layout
``ifcnn_jax.checkpoints.save_params`` exports).
"""

from __future__ import annotations

import functools
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.model import IFCNN, new_ifcnn
from ifcnn_jax.recipes import IMAGENET_MEAN, IMAGENET_STD
from train import evaluation, input_pipeline
from train.config_check import check_parallelism, validate_config
from train.export import export_model
from train.metric_writer import MetricWriter

logger = logging.getLogger(__name__)

DATA_AXIS = "data"
CHECKPOINT_SUBDIR = "checkpoints"
TrainState = dict[str, Any]


class TrainingDiverged(IFCNNError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


# ----------------------------------------------------------------------- the model


@functools.lru_cache(maxsize=None)
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
    (``random``: He-initialised; ``dct``: the fixed bank of ``train.conv1_filters``)."""
    model = new_ifcnn(config.fuse_rule, conv1_from=config.conv1_checkpoint or None, seed=config.seed)
    if not config.conv1_checkpoint and config.conv1_init == "dct":
        from train.conv1_filters import dct_filter_bank

        model.conv1.kernel[...] = jnp.asarray(dct_filter_bank())
    if config.conv4_init == "zeros":
        # The reference's He init gives the 1x1 output layer (3 outputs) weights of std
        # 0.82: the first outputs are ~4 normalised units off and Adam spends the first
        # thousand steps shrinking them (docs/training_notes.md).
        model.conv4.kernel[...] = jnp.zeros_like(model.conv4.kernel[...])
    _, params, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    as_numpy = functools.partial(jax.tree.map, np.asarray)
    return as_numpy(nnx.to_pure_dict(params)), as_numpy(nnx.to_pure_dict(stats))


def initial_state(config: ml_collections.ConfigDict) -> tuple[TrainState, optax.GradientTransformation]:
    """The train state of a fresh run as host (NumPy) arrays, and its optimiser."""
    params, batch_stats = initial_model(config)
    optimizer = make_optimizer(config, params)
    state = {"step": np.zeros((), np.int32), "params": params, "batch_stats": batch_stats,
             "opt_state": jax.tree.map(np.asarray, optimizer.init(params))}
    return state, optimizer


def normalize(images: jax.Array) -> jax.Array:
    """uint8 RGB (0-255) -> the multi-focus model's input space: RGB/255, then ImageNet
    mean/std normalisation (what the released models expect)."""
    unit = images.astype(jnp.float32) / 255.0
    return (unit - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


def denormalize(x: jax.Array) -> jax.Array:
    """The model's output space -> RGB on 0-255, clipped (not rounded)."""
    unit = x * jnp.asarray(IMAGENET_STD) + jnp.asarray(IMAGENET_MEAN)
    return jnp.clip(unit, 0.0, 1.0) * 255.0


# ------------------------------------------------------------------- optimisation


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
    return {name: jax.tree.map(lambda _: "frozen" if (freeze_conv1 and name == "conv1") else "trained", sub)
            for name, sub in params.items()}


def make_optimizer(config: ml_collections.ConfigDict, params: dict) -> optax.GradientTransformation:
    """The optimiser named by ``config.optimizer``, with optional gradient clipping;
    conv1 gets zero updates when ``config.freeze_conv1`` (an optax mask)."""
    schedule = learning_rate_schedule(config)
    if config.optimizer == "adam":
        base = optax.adam(schedule)
    elif config.optimizer == "adamw":
        base = optax.adamw(schedule, weight_decay=config.weight_decay)
    else:
        base = optax.sgd(schedule, momentum=config.momentum or None)
    if config.grad_clip_norm > 0:
        base = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), base)
    return optax.multi_transform({"trained": base, "frozen": optax.set_to_zero()},
                                 trainable_labels(params, config.freeze_conv1))


# ----------------------------------------------------------------------- the step


def make_loss_fn(config: ml_collections.ConfigDict, resnet_graphdef: nnx.GraphDef | None) -> Callable:
    """``loss(params, batch_stats, sources, target, resnet_state) -> (loss, aux)`` with
    sources (N, B, h, w, 3) and target (B, h, w, 3) in the model's normalised space."""
    fuse_rule = config.fuse_rule
    taps = tuple(config.perceptual_taps)
    tap_weights = tuple(float(w) for w in config.perceptual_tap_weights)
    pixel_weight, perceptual_weight = float(config.pixel_weight), float(config.perceptual_weight)

    freeze_conv1 = bool(config.freeze_conv1)

    def loss_fn(params, batch_stats, sources, target, resnet_state):
        from ifcnn_jax.losses import perceptual_loss, pixel_loss

        if freeze_conv1:
            # Its updates are masked anyway; no gradient also spares XLA that convolution.
            params = {**params, "conv1": jax.lax.stop_gradient(params["conv1"])}
        model = merge_model(fuse_rule, params, batch_stats)
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


def make_train_step(config: ml_collections.ConfigDict, optimizer: optax.GradientTransformation,
                    resnet_graphdef: nnx.GraphDef | None) -> Callable:
    """``step(state, batch, resnet_state) -> (state, metrics)``; ``batch`` holds uint8
    ``sources`` (B, N, h, w, 3) and ``target`` (B, h, w, 3)."""
    loss_fn = make_loss_fn(config, resnet_graphdef)

    def train_step(state: TrainState, batch: dict, resnet_state: Any) -> tuple[TrainState, dict]:
        sources = normalize(jnp.moveaxis(batch["sources"], 1, 0))
        target = normalize(batch["target"])
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(
            state["params"], state["batch_stats"], sources, target, resnet_state)
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        new_state = {"step": state["step"] + 1, "params": optax.apply_updates(state["params"], updates),
                     "batch_stats": aux["batch_stats"], "opt_state": opt_state}
        step_metrics = {"loss": loss, "pixel_loss": aux["pixel_loss"],
                        "perceptual_loss": aux["perceptual_loss"], "grad_norm": optax.tree.norm(grads)}
        return new_state, step_metrics

    return train_step


def make_fuse_fn(fuse_rule: str) -> Callable:
    """``fuse(params, batch_stats, sources uint8 (B, N, h, w, 3)) -> (B, h, w, 3)`` on
    0-255 (float), with BatchNorm in inference mode (running statistics)."""

    def fuse(params, batch_stats, sources):
        model = merge_model(fuse_rule, params, batch_stats)
        model.eval()
        return denormalize(model(normalize(jnp.moveaxis(sources, 1, 0))))

    return fuse


# ------------------------------------------------------------------- the devices


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


# ---------------------------------------------------------------- checkpointing


def checkpoint_manager(workdir: Path, config: ml_collections.ConfigDict):
    import orbax.checkpoint as ocp

    # The loop decides when to save (every checkpoint_every_steps and at the end).
    options = ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True,
                                           cleanup_tmp_directories=True)
    return ocp.CheckpointManager((workdir / CHECKPOINT_SUBDIR).absolute(), options=options)


def save_checkpoint(manager, step: int, state: TrainState, data_state: dict) -> None:
    """Saves the train state and the data iterator state as checkpoint ``step`` (in the
    background; Orbax writes to a temporary folder and renames it when complete, so a
    killed run leaves the earlier checkpoints intact)."""
    import orbax.checkpoint as ocp

    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=True)


def restore_checkpoint(manager, step: int, abstract_state: TrainState) -> tuple[TrainState, dict]:
    import orbax.checkpoint as ocp

    restored = manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
    return restored["state"], dict(restored["data"])


# ------------------------------------------------------------------ the loop


def _say(message: str) -> None:
    """Prints a status line once per run (first process only)."""
    if jax.process_index() == 0:
        print(message, flush=True)


def _load_resnet(config: ml_collections.ConfigDict):
    if not config.resnet_checkpoint or config.perceptual_weight == 0:
        reason = ("config.resnet_checkpoint is empty" if not config.resnet_checkpoint
                  else "config.perceptual_weight is 0")
        _say(f"perceptual loss: off ({reason}); training with the pixel loss only")
        return None, None
    from ifcnn_jax.resnet import load_resnet101

    resnet = load_resnet101(config.resnet_checkpoint)
    graphdef, state = nnx.split(resnet)
    _say(f"perceptual loss: on, ResNet-101 taps {list(config.perceptual_taps)} from "
         f"{config.resnet_checkpoint}, weight {config.perceptual_weight}")
    return graphdef, state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains (or resumes training of) IFCNN as ``config`` says, in ``workdir``.

    ``workdir`` receives ``checkpoints/`` (Orbax, the last ``keep_checkpoints``),
    ``metrics.jsonl`` and ``tensorboard/`` (scalars), ``eval/`` (PNG grids) and, once
    ``num_train_steps`` are done, the exported model (``model/`` unless
    ``config.export_dir``). Returns the last scalars written (training and validation).
    Raises ``IFCNNError`` for a bad config and ``TrainingDiverged`` for a NaN/inf loss.
    """
    validate_config(config)
    check_parallelism(config, jax.device_count(), jax.process_count())
    workdir_path = Path(workdir)
    process_index, process_count = jax.process_index(), jax.process_count()
    is_main = process_index == 0

    train_photos, eval_photos = input_pipeline.make_collections(config.data)
    eval_set = input_pipeline.eval_examples(eval_photos, config)
    real_pairs = evaluation.real_pairs(config.eval_pairs_folder) if config.eval_pairs_folder else []
    resnet_graphdef, resnet_state = _load_resnet(config)

    mesh = make_mesh()
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))

    host_state, optimizer = initial_state(config)
    abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype,
                                                                 sharding=replicated), host_state)
    if resnet_state is not None:
        resnet_state = replicate(resnet_state, replicated)

    manager = checkpoint_manager(workdir_path, config)
    latest = manager.latest_step()
    if latest is not None:
        state, data_state = restore_checkpoint(manager, latest, abstract_state)
        _say(f"resuming from the checkpoint of step {latest} in {workdir_path / CHECKPOINT_SUBDIR}")
    else:
        state, data_state = replicate(host_state, replicated), None
        conv1 = "conv1 (frozen)" if config.freeze_conv1 else "conv1"
        _say(f"{conv1}: from {config.conv1_checkpoint}" if config.conv1_checkpoint else
             f"{conv1}: {config.conv1_init} initialisation (config.conv1_checkpoint is empty; "
             "the paper uses ResNet-101's conv1)")
    start_step = int(to_host(state["step"]))
    if data_state is not None and data_state.get("next_index") != start_step:
        raise IFCNNError(f"checkpoint of step {start_step} holds data iterator state {data_state}, "
                         "which does not match its step")

    train_step = jax.jit(make_train_step(config, optimizer, resnet_graphdef),
                         in_shardings=(replicated, batch_sharding, replicated),
                         out_shardings=(replicated, replicated))
    eval_sharding = batch_sharding if config.eval_batch_size % jax.device_count() == 0 else replicated
    fuse = jax.jit(make_fuse_fn(config.fuse_rule), in_shardings=(replicated, replicated, eval_sharding),
                   out_shardings=replicated)

    writer = MetricWriter(workdir_path, enabled=is_main)
    schedule = learning_rate_schedule(config)
    dataset = input_pipeline.train_dataset(train_photos, config, process_index=process_index,
                                           process_count=process_count)
    iterator = input_pipeline.train_iterator(dataset, config, data_state)
    last_step = config.num_train_steps
    if config.steps_per_run:
        last_step = min(last_step, start_step + config.steps_per_run)

    def evaluate(step: int) -> dict[str, float]:
        outputs = []
        for chunk in input_pipeline.batches(eval_set, config.eval_batch_size):
            count = len(chunk["sources"])
            sources = chunk["sources"]
            if count < config.eval_batch_size:  # pad: one compiled shape for every chunk
                pad = np.repeat(sources[-1:], config.eval_batch_size - count, axis=0)
                sources = np.concatenate([sources, pad])
            with jax.set_mesh(mesh):  # as for the train step: conv_ops per device
                fused = fuse(state["params"], state["batch_stats"], replicate(sources, eval_sharding))
            outputs.append(to_host(fused)[:count])
        fused = np.concatenate(outputs)
        scores = {f"eval/{k}": v for k, v in
                  evaluation.reference_scores(fused, eval_set["sources"], eval_set["target"]).items()}
        if is_main and config.grid_examples:
            rows = min(config.grid_examples, len(fused))
            evaluation.write_grid(workdir_path / "eval" / f"synthetic_step{step:07d}.png",
                                  eval_set["sources"][:rows], fused[:rows], eval_set["target"][:rows])
        if real_pairs and is_main:
            model = merge_model(config.fuse_rule, jax.tree.map(to_host, state["params"]),
                                jax.tree.map(to_host, state["batch_stats"]))
            model.eval()
            from ifcnn_jax.recipes import fuse as fuse_recipe

            real = evaluation.evaluate_real_pairs(
                lambda images: fuse_recipe(model, images, task="multifocus"), real_pairs,
                workdir_path / "eval" / f"real_step{step:07d}.png" if config.grid_examples else None,
                config.grid_examples)
            scores.update({f"eval_real/{k}": v for k, v in real.items()})
        return scores

    from tqdm import tqdm

    progress = tqdm(total=config.num_train_steps, initial=start_step, unit="step", desc="training",
                    disable=not (is_main and config.progress_bar), dynamic_ncols=True)
    last_scalars: dict[str, float] = {}
    window: list[dict[str, float]] = []
    window_start, paused = time.perf_counter(), 0.0
    last_saved = latest
    step = start_step
    try:
        while step < last_step:
            batch = shard_batch(next(iterator), batch_sharding)
            # The mesh context lets ifcnn_jax.conv_ops convolve each device's own images
            # (without it, XLA would gather the sharded batch onto every device).
            with jax.set_mesh(mesh):
                state, step_metrics = train_step(state, batch, resnet_state)
            step_metrics = {k: float(to_host(v)) for k, v in step_metrics.items()}
            if not math.isfinite(step_metrics["loss"]):
                kept = (f"the last good checkpoint (step {last_saved}) is kept in "
                        f"{workdir_path / CHECKPOINT_SUBDIR}" if last_saved is not None
                        else "no checkpoint had been written yet")
                raise TrainingDiverged(
                    f"the training loss became {step_metrics['loss']} at step {step + 1}; stopping, "
                    f"{kept}. Lower config.learning_rate or set config.grad_clip_norm")
            step += 1
            window.append(step_metrics)
            progress.update(1)
            if step % config.log_every_steps == 0 or step == last_step:
                elapsed = time.perf_counter() - window_start - paused
                scalars = {f"train/{k}": float(np.mean([m[k] for m in window])) for k in window[0]}
                scalars["train/learning_rate"] = float(schedule(step - 1))
                scalars["train/steps_per_second"] = len(window) / max(elapsed, 1e-9)
                writer.write(step, scalars)
                progress.set_postfix(loss=f"{scalars['train/loss']:.4g}")
                last_scalars.update(scalars)
                window, window_start, paused = [], time.perf_counter(), 0.0
            if step % config.checkpoint_every_steps == 0 or step == last_step:
                save_checkpoint(manager, step, state, iterator.get_state())
                last_saved = step
            if (config.eval_every_steps and step % config.eval_every_steps == 0) or \
                    step == config.num_train_steps:
                eval_start = time.perf_counter()
                scores = evaluate(step)
                writer.write(step, scores)
                last_scalars.update(scores)
                if is_main:
                    progress.write(_eval_line(step, scores))
                paused += time.perf_counter() - eval_start  # evaluation time is not training speed
    finally:
        progress.close()
        manager.wait_until_finished()
        manager.close()
        writer.close()

    if step >= config.num_train_steps:
        export_dir = Path(config.export_dir) if config.export_dir else workdir_path / "model"
        if is_main:
            metadata = {"kind": "ifcnn", "fuse_rule": config.fuse_rule, "task": "multifocus",
                        "step": step, "config": config.name, "trained_with": "python -m train.main"}
            export_model(export_dir, jax.tree.map(to_host, state["params"]),
                         jax.tree.map(to_host, state["batch_stats"]), metadata)
            _say(f"exported the trained model (step {step}) to {export_dir}\n"
                 f"fuse with: ifcnn-fuse --task multifocus --model {export_dir} A.png B.png -o fused.png")
    else:
        _say(f"stopped after step {step} (config.steps_per_run={config.steps_per_run}); "
             "run the same command again to continue")
    return last_scalars


def _eval_line(step: int, scores: dict[str, float]) -> str:
    line = (f"step {step}: validation PSNR {scores['eval/psnr']:.2f} dB "
            f"(source average {scores['eval/psnr_average_baseline']:.2f} dB), "
            f"SSIM {scores['eval/ssim']:.4f} (average {scores['eval/ssim_average_baseline']:.4f})")
    if "eval_real/sf" in scores:
        line += f"; real pairs SF {scores['eval_real/sf']:.2f} (average {scores['eval_real/sf_average_baseline']:.2f})"
    return line
