"""Trains IFCNN from a config file.

    python -m train.main --config train/configs/demo.py --workdir runs/demo
    python -m train.main --config train/configs/default.py --workdir runs/nyu \
        --config.batch_size=32 --config.learning_rate=3e-4

Several processes (multi-host): start one per host with ``--multihost`` (cluster
auto-detection: TPU pod slices, SLURM, Open MPI, Kubernetes) or with explicit
``--coordinator_address``, ``--num_processes`` and ``--process_id``; see
docs/training.md.

CPU devices and the memory allocator are set up by ``train.process`` before JAX
starts (one CPU device per core; malloc keeps freed memory): see there.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from train.process import keep_freed_memory, one_cpu_device_per_core

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Training config file (train/configs/*.py).", lock_config=True
)
flags.DEFINE_string(
    "workdir", None, "Folder for checkpoints, logs, evaluation images and the exported model."
)
flags.DEFINE_bool(
    "multihost",
    False,
    "Call jax.distributed.initialize() and let JAX detect the cluster "
    "(TPU pod slice, SLURM, Open MPI, Kubernetes).",
)
flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0, for multi-process runs started by hand (with --num_processes and --process_id).",
)
flags.DEFINE_integer("num_processes", None, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", None, "Index of this process, 0 .. num_processes - 1.")
flags.DEFINE_enum(
    "cpu_collectives",
    None,
    ["gloo", "mpi"],
    "Collectives for multi-process runs on CPUs only (gloo needs no extra software).",
)
flags.mark_flags_as_required(["config", "workdir"])


def _explicit_processes() -> bool:
    """Whether the processes of a multi-process run were given by hand."""
    return bool(FLAGS.coordinator_address or FLAGS.num_processes is not None or FLAGS.process_id is not None)


def _initialize_distributed() -> None:
    import jax  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    explicit = _explicit_processes()
    if FLAGS.cpu_collectives:
        jax.config.update("jax_cpu_collectives_implementation", FLAGS.cpu_collectives)
    if explicit:
        jax.distributed.initialize(
            coordinator_address=FLAGS.coordinator_address,
            num_processes=FLAGS.num_processes,
            process_id=FLAGS.process_id,
        )
    elif FLAGS.multihost:
        jax.distributed.initialize()


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Orbax logs every file it writes at INFO.
    from ifcnn_jax.cli.common import run_command  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)
    from train.config_check import validate_config  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

    def body() -> int:
        validate_config(FLAGS.config)  # before JAX starts or anything is compiled
        single_process = not (FLAGS.multihost or _explicit_processes())
        if single_process and one_cpu_device_per_core(FLAGS.config.batch_size) > 1:
            print(
                f"XLA: {os.environ['XLA_FLAGS'].rsplit('=', 1)[1]} CPU devices, one per core "
                "(set XLA_FLAGS to choose yourself)",
                flush=True,
            )
        _initialize_distributed()
        from train.train import train_and_evaluate  # noqa: PLC0415 - lazy: JAX must start after the process settings (XLA_FLAGS, malloc)

        train_and_evaluate(FLAGS.config, FLAGS.workdir)
        return 0

    return run_command(
        body, interrupted="interrupted; the checkpoints already written are kept", stop_at_once=False
    )


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with a one-line error for a bad ``--config.KEY=VALUE``
    override (ml_collections raises plain exceptions for those)."""
    try:
        remaining = FLAGS(argv)
        FLAGS.config.keys()  # loads the file and applies the overrides now
        return remaining
    except (flags.Error, AttributeError, KeyError, OSError, TypeError, ValueError) as exc:
        inner = exc
        while inner.args and isinstance(inner.args[0], BaseException):  # AttributeError(KeyError(...))
            inner = inner.args[0]
        text = inner.args[0] if inner.args and isinstance(inner.args[0], str) else str(inner)
        first, *rest = text.strip().splitlines() or [type(exc).__name__]
        if isinstance(exc, (AttributeError, KeyError)):
            hint = " ".join(" ".join(rest).split())
            message = (
                f"the config has no key {first.strip(chr(34) + chr(39))!r}"
                + (f" ({hint})" if hint else "")
                + "; see train/configs/default.py"
            )
        else:
            message = " ".join(
                text.replace(
                    "Configuration is not available because of an earlier failure to load: ", ""
                ).split()
            )
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    keep_freed_memory()
    app.run(lambda argv: sys.exit(main(argv)), flags_parser=parse_flags)
