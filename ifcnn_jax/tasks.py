"""The fusion tasks and the released model each uses: the words that the command
line, test-set discovery and the recipes share (a light module: no JAX)."""

TASKS: tuple[str, ...] = ("multifocus", "infrared", "medical", "exposure")
# The authors' demo (IFCNN_Main.py) fuses each task with this released model.
DEFAULT_RULE: dict[str, str] = {"multifocus": "max", "infrared": "max", "medical": "max", "exposure": "mean"}
