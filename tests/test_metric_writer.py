"""Scalars go to metrics.jsonl and TensorBoard event files, from one process only."""

from __future__ import annotations

import json
import math

from train.metric_writer import MetricWriter


def test_jsonl_and_event_files(tmp_path):
    writer = MetricWriter(tmp_path)
    writer.write(10, {"train/loss": 0.5, "eval/psnr": math.inf})
    writer.write(20, {"train/loss": 0.25})
    writer.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["train/loss"]) for r in records] == [(10, 0.5), (20, 0.25)]
    assert records[0]["eval/psnr"] is None
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_disabled_writer_writes_nothing(tmp_path):
    writer = MetricWriter(tmp_path / "w", enabled=False)
    writer.write(1, {"train/loss": 1.0})
    writer.close()
    assert not (tmp_path / "w").exists()
