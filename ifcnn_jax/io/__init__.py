"""Files in and out: images, checkpoints, PyTorch state dicts, test sets, and the
temporary files of atomic writes."""
