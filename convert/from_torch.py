"""Converts PyTorch weights to ifcnn-jax checkpoints.

    python convert/from_torch.py ifcnn SRC.pth OUT_DIR [--verify] [--force]
    python convert/from_torch.py resnet101 SRC.pth OUT_DIR [--verify] [--force]

Each subcommand lives in its own module under ``convert/`` with ``add_arguments``
and ``run``. Errors in the input are reported on one line with exit status 2, and
nothing is written under OUT_DIR.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ifcnn_jax.cli.common import run_command

SUBCOMMANDS = {
    "ifcnn": ("convert.ifcnn", "the authors' released IFCNN-MAX/SUM/MEAN state dicts"),
    "resnet101": (
        "convert.resnet101",
        "a torchvision ResNet-101 state dict (for conv1 and the perceptual loss)",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="from_torch.py", description="Convert PyTorch weights to ifcnn-jax checkpoints."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{" + ",".join(SUBCOMMANDS) + "}")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    def body() -> int:
        # The parser imports the subcommands (torch, JAX): inside run_command, so that a
        # Ctrl-C during those imports is handled like one during the conversion.
        args = build_parser().parse_args(argv)
        return args.run(args)

    return run_command(body, interrupted="interrupted; nothing written")


if __name__ == "__main__":
    sys.exit(main())
