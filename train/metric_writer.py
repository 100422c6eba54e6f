"""Scalars of a training run: TensorBoard event files and a JSON-lines file.

Only the first process writes (the others get a writer that does nothing), so a
multi-host run logs each scalar once.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path

from tensorboardX import SummaryWriter


class MetricWriter:
    """Writes ``{name: value}`` scalars at a step to ``<workdir>/tensorboard`` (event
    files) and appends them as one JSON object per line to ``<workdir>/metrics.jsonl``.
    """

    def __init__(self, workdir: str | os.PathLike, *, enabled: bool = True):
        self.enabled = enabled
        self.jsonl_path = Path(workdir) / "metrics.jsonl"
        self._tensorboard = None
        if enabled:
            Path(workdir).mkdir(parents=True, exist_ok=True)
            self._tensorboard = SummaryWriter(logdir=str(Path(workdir) / "tensorboard"))

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        """Records scalars (non-finite ones are written as JSON null)."""
        if not self.enabled:
            return
        record = {"step": int(step), "time": round(time.time(), 3)}
        for name, value in scalars.items():
            value = float(value)
            self._tensorboard.add_scalar(name, value, int(step))
            record[name] = value if math.isfinite(value) else None
        with open(self.jsonl_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")

    def flush(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.flush()

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
