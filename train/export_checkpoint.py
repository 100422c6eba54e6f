"""Export a model from a training checkpoint (e.g. of a run that has not finished).

    python -m train.export_checkpoint --config train/configs/multifocus.py --workdir runs/mf \
        --out runs/mf/model-step5000 [--step 5000] [--config.KEY=VALUE ...]

``python -m train.main`` exports only when ``num_train_steps`` are done. This reads
the latest (or ``--step``) Orbax checkpoint in ``WORKDIR/checkpoints`` with the config
the run used (the same overrides) and writes the parameters and BatchNorm running
statistics in the format ``ifcnn-fuse --model`` and ``ifcnn_jax.load`` read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import numpy as np

from ifcnn_jax import param_trees
from ifcnn_jax.io.checkpoints import save_params
from train.checkpointing import checkpoint_manager, restore_checkpoint
from train.precise_bn import load_config
from train.step import initial_state


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.export_checkpoint")
    parser.add_argument("--config", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--step", type=int, help="default: the latest checkpoint")
    args, overrides = parser.parse_known_args(argv)

    config = load_config(args.config, overrides)
    host_state, _ = initial_state(config)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), np.asarray(x).dtype), host_state)
    manager = checkpoint_manager(Path(args.workdir), config)
    step = args.step if args.step is not None else manager.latest_step()
    if step is None:
        raise SystemExit(f"no checkpoint in {Path(args.workdir) / 'checkpoints'}")
    state, _ = restore_checkpoint(manager, step, abstract)
    manager.close()
    metadata = {
        "kind": "ifcnn",
        "fuse_rule": config.fuse_rule,
        "task": "multifocus",
        "step": int(step),
        "config": config.name,
        "trained_with": "python -m train.main (exported from a checkpoint)",
    }
    save_params(
        args.out,
        jax.tree.map(np.asarray, param_trees.merge(state["params"], state["batch_stats"])),
        metadata,
    )
    print(f"exported step {step} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
