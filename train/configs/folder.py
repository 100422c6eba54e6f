"""Training on any folder of sharp photos, with synthesised focus maps.

    python -m train.main --config train/configs/folder.py --workdir runs/photos \
        --config.data.folder=PHOTOS [--config.data.depth_folder=DEPTHS] \
        [--config.data.eval_folder=HELD_OUT_PHOTOS]

Photos without a depth map get random smooth or shape masks as focus maps (photos with
one, NAME.npy or NAME.png in ``data.depth_folder``, larger = farther, are split by
depth). Without ``data.eval_folder`` the last ``data.eval_holdout`` photos (by file
name) are held out for validation. The other settings are those of ``default.py``.
"""

from train.configs import default


def get_config():
    config = default.get_config()
    config.name = "folder"
    config.data.source = "folder"
    config.data.folder = ""  # Required: set it with --config.data.folder=PATH.
    return config
