"""IFCNN training: the loop that runs the jitted step (``train.step``), saves resumable
checkpoints (``train.checkpointing``), validates periodically and exports a model that
``ifcnn-fuse`` loads."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec
from tqdm import tqdm

from ifcnn_jax.errors import IFCNNError
from ifcnn_jax.resnet import load_resnet101
from train import evaluation, input_pipeline
from train.checkpointing import (
    CHECKPOINT_SUBDIR,
    check_export_target,
    checkpoint_manager,
    export_model,
    restore_checkpoint,
    save_checkpoint,
)
from train.config_check import check_parallelism, validate_config
from train.metric_writer import MetricWriter
from train.step import (
    DATA_AXIS,
    DIVERGED_LOSS,
    TrainState,
    initial_state,
    learning_rate_schedule,
    make_mesh,
    make_probe_fn,
    make_train_step,
    replicate,
    shard_batch,
    to_host,
)

logger = logging.getLogger(__name__)


class TrainingDiverged(IFCNNError):
    """The loss or the state became NaN, infinite or absurd; the last good checkpoint
    is kept."""


def _say(message: str) -> None:
    """Prints a status line once per run (first process only)."""
    if jax.process_index() == 0:
        print(message, flush=True)


def _load_resnet(config: ml_collections.ConfigDict):
    if not config.resnet_checkpoint or config.perceptual_weight == 0:
        reason = (
            "config.resnet_checkpoint is empty"
            if not config.resnet_checkpoint
            else "config.perceptual_weight is 0"
        )
        _say(f"perceptual loss: off ({reason}); training with the pixel loss only")
        return None, None

    resnet = load_resnet101(config.resnet_checkpoint)
    graphdef, state = nnx.split(resnet)
    _say(
        f"perceptual loss: on, ResNet-101 taps {list(config.perceptual_taps)} from "
        f"{config.resnet_checkpoint}, weight {config.perceptual_weight}"
    )
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
    export_dir = Path(config.export_dir) if config.export_dir else workdir_path / "model"
    check_export_target(export_dir, workdir_path)  # before hours of training, not after
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
    abstract_state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype, sharding=replicated), host_state
    )
    if resnet_state is not None:
        resnet_state = replicate(resnet_state, replicated)

    probe = jax.jit(make_probe_fn(config.fuse_rule), out_shardings=replicated)
    probe_batch = replicate({k: v[: config.eval_batch_size] for k, v in eval_set.items()}, replicated)

    def state_is_sound(state: TrainState) -> tuple[bool, float]:
        with jax.set_mesh(mesh):
            finite, loss = probe(
                state["params"], state["batch_stats"], probe_batch["sources"], probe_batch["target"]
            )
        loss = float(to_host(loss))
        return bool(to_host(finite)) and loss <= DIVERGED_LOSS, loss

    manager = checkpoint_manager(workdir_path, config)
    # Resume from the newest checkpoint that passes the check (one saved by an older
    # version without it may hold a ruined state); unsound ones are this run's own
    # files and are deleted, so training continues from the last good one.
    latest = None
    for candidate in sorted(manager.all_steps(), reverse=True):
        state, data_state = restore_checkpoint(manager, candidate, abstract_state)
        sound, probe_loss = state_is_sound(state)
        if sound:
            latest = candidate
            break
        _say(
            f"the checkpoint of step {candidate} holds a diverged state (probe loss "
            f"{probe_loss:.4g}); deleting it"
        )
        if is_main:
            manager.delete(candidate)
    if latest is not None:
        _say(f"resuming from the checkpoint of step {latest} in {workdir_path / CHECKPOINT_SUBDIR}")
    else:
        state, data_state = replicate(host_state, replicated), None
        conv1 = "conv1 (frozen)" if config.freeze_conv1 else "conv1"
        _say(
            f"{conv1}: from {config.conv1_checkpoint}"
            if config.conv1_checkpoint
            else f"{conv1}: {config.conv1_init} initialisation (config.conv1_checkpoint is empty; "
            "the paper uses ResNet-101's conv1)"
        )
    start_step = int(to_host(state["step"]))
    if data_state is not None and data_state.get("next_index") != start_step:
        raise IFCNNError(
            f"checkpoint of step {start_step} holds data iterator state {data_state}, "
            "which does not match its step"
        )

    train_step = jax.jit(
        make_train_step(config, optimizer, resnet_graphdef),
        in_shardings=(replicated, batch_sharding, replicated),
        out_shardings=(replicated, replicated),
    )
    validate = evaluation.Validator(config, eval_set, real_pairs, mesh, workdir_path if is_main else None)

    writer = MetricWriter(workdir_path, enabled=is_main)
    schedule = learning_rate_schedule(config)
    dataset = input_pipeline.train_dataset(
        train_photos, config, process_index=process_index, process_count=process_count
    )
    iterator = input_pipeline.train_iterator(dataset, config, data_state)
    last_step = config.num_train_steps
    if config.steps_per_run:
        last_step = min(last_step, start_step + config.steps_per_run)

    progress = tqdm(
        total=config.num_train_steps,
        initial=start_step,
        unit="step",
        desc="training",
        disable=not (is_main and config.progress_bar),
        dynamic_ncols=True,
    )
    last_scalars: dict[str, float] = {}
    window: list[dict[str, float]] = []
    window_start, paused = time.perf_counter(), 0.0
    last_saved = latest
    step = start_step

    def diverged(what: str):
        kept = (
            f"the last good checkpoint (step {last_saved}) is kept in {workdir_path / CHECKPOINT_SUBDIR}"
            if last_saved is not None
            else "no checkpoint had been written yet"
        )
        raise TrainingDiverged(
            f"{what}; stopping, {kept}. Lower config.learning_rate or set "
            "config.grad_clip_norm, then run again to continue from there"
        )

    try:
        while step < last_step:
            batch = shard_batch(next(iterator), batch_sharding)
            # The mesh context lets ifcnn_jax.conv_ops convolve each device's own images
            # (without it, XLA would gather the sharded batch onto every device).
            with jax.set_mesh(mesh):
                state, step_metrics = train_step(state, batch, resnet_state)
            step_metrics = {k: float(to_host(v)) for k, v in step_metrics.items()}
            state_finite = step_metrics.pop("state_finite") > 0
            if not math.isfinite(step_metrics["loss"]) or step_metrics["loss"] > DIVERGED_LOSS:
                diverged(f"the training loss became {step_metrics['loss']:.4g} at step {step + 1}")
            if not state_finite:
                diverged(f"the parameters or optimiser state became NaN or infinite at step {step + 1}")
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
                sound, probe_loss = state_is_sound(state)
                if not sound:
                    diverged(
                        f"the state of step {step} fails the check before saving (probe loss "
                        f"{probe_loss:.4g})"
                    )
                save_checkpoint(manager, step, state, iterator.get_state())
                last_saved = step
            if (
                config.eval_every_steps and step % config.eval_every_steps == 0
            ) or step == config.num_train_steps:
                eval_start = time.perf_counter()
                scores = validate(state, step)
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
        if is_main:
            metadata = {
                "kind": "ifcnn",
                "fuse_rule": config.fuse_rule,
                "task": "multifocus",
                "step": step,
                "config": config.name,
                "trained_with": "python -m train.main",
            }
            export_model(
                export_dir,
                jax.tree.map(to_host, state["params"]),
                jax.tree.map(to_host, state["batch_stats"]),
                metadata,
                workdir=workdir_path,
            )
            _say(
                f"exported the trained model (step {step}) to {export_dir}\n"
                f"fuse with: ifcnn-fuse --task multifocus --model {export_dir} A.png B.png -o fused.png"
            )
    else:
        _say(
            f"stopped after step {step} (config.steps_per_run={config.steps_per_run}); "
            "run the same command again to continue"
        )
    return last_scalars


def _eval_line(step: int, scores: dict[str, float]) -> str:
    line = (
        f"step {step}: validation PSNR {scores['eval/psnr']:.2f} dB "
        f"(source average {scores['eval/psnr_average_baseline']:.2f} dB), "
        f"SSIM {scores['eval/ssim']:.4f} (average {scores['eval/ssim_average_baseline']:.4f})"
    )
    if "eval_real/sf" in scores:
        line += (
            f"; real pairs SF {scores['eval_real/sf']:.2f} "
            f"(average {scores['eval_real/sf_average_baseline']:.2f})"
        )
    return line
