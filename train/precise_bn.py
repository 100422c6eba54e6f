"""Re-estimate a trained model's BatchNorm statistics on training batches ("precise BN").

    python -m train.precise_bn --model runs/mf/model --config train/configs/multifocus.py \
        --out runs/mf/model-precise-bn [--batches 200] [--config.KEY=VALUE ...]

During training, BatchNorm normalises with the statistics of the current batch and keeps
exponential moving averages (momentum 0.1, PyTorch's convention) for inference. Those
averages mix batches seen under slightly different, earlier weights. Here the weights
are fixed and the statistics are recomputed as the plain mean, over ``--batches``
training batches of the config (the same synthesis, a different seed), of each batch's
mean and unbiased variance, layer by layer in order (each layer sees the inputs the
earlier, already re-estimated layers give in training mode, which does not depend on
their running statistics). The model with these statistics is written to ``--out``; the
relative change of every statistic is printed. Wu & Johnson, "Rethinking 'Batch' in
BatchNorm" (2021), call this precise BN.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from ifcnn_jax import param_trees
from ifcnn_jax.io.checkpoints import load_params, save_params
from ifcnn_jax.model import load
from train import input_pipeline
from train.config_check import validate_config
from train.step import normalize


def load_config(path: str, overrides: list[str]):
    """The config of ``path`` (a train/configs file) with ``--config.KEY=VALUE``
    overrides of scalar values (converted to the type of the value they replace)."""

    spec = importlib.util.spec_from_file_location("config_module", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for item in overrides:
        if not item.startswith("--config.") or "=" not in item:
            raise SystemExit(f"unknown argument {item!r} (expected --config.KEY=VALUE)")
        key, value = item[len("--config.") :].split("=", 1)
        node = config
        *path_keys, leaf = key.split(".")
        for p in path_keys:
            node = node[p]
        old = node[leaf]
        node[leaf] = (value == "True") if isinstance(old, bool) else type(old)(value)
    validate_config(config)
    return config


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.precise_bn")
    parser.add_argument("--model", required=True, help="exported model directory")
    parser.add_argument("--config", required=True, help="training config file")
    parser.add_argument("--out", required=True, help="output model directory")
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--seed", type=int, default=98765, help="data seed (not the training seed)")
    parser.add_argument(
        "--no-augment",
        action="store_true",
        help="without the config's colour augmentation (default: batches as in training)",
    )
    args, overrides = parser.parse_known_args(argv)

    config = load_config(args.config, overrides)
    model = load(args.model)
    _, metadata = load_params(args.model)
    train_photos, _ = input_pipeline.make_collections(config.data)
    layers = [model.conv2.bn, model.conv3.bn]
    sums = [{"mean": 0.0, "var": 0.0} for _ in layers]

    @nnx.jit
    def batch_stats(model, sources):
        model.train()
        model(sources)
        return [(layer.mean[...], layer.var[...]) for layer in (model.conv2.bn, model.conv3.bn)]

    # With momentum 1 a training-mode call leaves running = the last group's batch
    # statistics; conv2 normalises each source as its own group, so it is called per source.
    for layer in layers:
        layer.momentum = 1.0
    count = 0
    for b in range(args.batches):
        examples = [
            input_pipeline.make_example(
                train_photos,
                config.data,
                args.seed,
                b * config.batch_size + j,
                config.data.crop_size,
                augment=not args.no_augment,
            )
            for j in range(config.batch_size)
        ]
        sources = normalize(jnp.moveaxis(jnp.asarray(np.stack([e["sources"] for e in examples])), 1, 0))
        # conv2: each source is its own group, so average over sources too.
        per_source = [
            batch_stats(model, sources[k : k + 1].repeat(2, axis=0))[0] for k in range(sources.shape[0])
        ]
        stats = batch_stats(model, sources)
        for m, v in per_source:
            sums[0]["mean"] = sums[0]["mean"] + np.asarray(m)
            sums[0]["var"] = sums[0]["var"] + np.asarray(v)
        sums[1]["mean"] = sums[1]["mean"] + np.asarray(stats[1][0]) * len(per_source)
        sums[1]["var"] = sums[1]["var"] + np.asarray(stats[1][1]) * len(per_source)
        count += len(per_source)
    original = load(args.model)
    for name, layer, old, acc in zip(
        ("conv2.bn", "conv3.bn"), layers, (original.conv2.bn, original.conv3.bn), sums
    ):
        mean, var = acc["mean"] / count, acc["var"] / count
        for stat, new, before in (
            ("mean", mean, np.asarray(old.mean[...])),
            ("var", var, np.asarray(old.var[...])),
        ):
            change = np.abs(new - before) / (np.abs(before) + 1e-3)
            print(f"{name}.{stat}: median relative change {np.median(change):.3f}, max {change.max():.3f}")
        layer.mean[...] = jnp.asarray(mean)
        layer.var[...] = jnp.asarray(var)
        layer.momentum = 0.1
    model.eval()
    save_params(
        args.out,
        jax.tree.map(np.asarray, param_trees.merge(*param_trees.split(model))),
        dict(metadata, precise_bn={"batches": args.batches, "seed": args.seed}),
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
