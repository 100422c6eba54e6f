"""The multi-focus weights this project ships: trained on photos from package registries.

    python -m train.get_photos --out photos      # once: fetch and split the photos
    python -m train.main --config train/configs/multifocus.py --workdir runs/mf

Data: the training photos of ``train/get_photos.py`` (scikit-image, scikit-learn and
Debian wallpaper packages; none has depth, so focus maps are random smooth or shape
masks), validated on its fixed held-out photos (``photos/heldout``), which are never
trained on. conv1 is the authors' released IFCNN-MAX conv1 (ResNet-101's conv1, read
from the ``.pth`` directly) and frozen, as in the paper. No perceptual loss: there is
no ImageNet ResNet-101 offline. Paths are relative to the working directory (the
repository root); override them with ``--config.data.folder=...``,
``--config.data.eval_folder=...`` and ``--config.conv1_checkpoint=...``.

Sized for about 1.5-2 hours on one CPU core. Why each value differs from
``default.py`` is in ``docs/training_notes.md``.
"""

from train.configs import default


def get_config():
    config = default.get_config()
    config.name = "multifocus"
    config.data.source = "folder"
    config.data.folder = "photos/train"
    config.data.eval_folder = "photos/heldout"
    config.data.focus_map = "auto"
    config.data.colour_augment = 0.8  # colour transform on 80% of training examples
    config.data.crop_size = 64
    config.data.num_threads = 1
    config.data.cache_size = 128  # all training photos stay decoded
    config.conv1_checkpoint = "../shared/ifcnn-release/snapshots/IFCNN-MAX.pth"
    config.freeze_conv1 = True
    config.conv4_init = "zeros"  # the reference's He init of the 1x1 output conv is far off
    config.perceptual_weight = 0.0
    config.resnet_checkpoint = ""
    config.batch_size = 16
    config.learning_rate = 1e-3
    config.lr_schedule = "cosine"
    config.warmup_steps = 200
    config.num_train_steps = 6_500  # 2.6 steps/s on a quiet core (~45 min); 1.1-1.9 on one shared with tests
    config.checkpoint_every_steps = 500
    config.keep_checkpoints = 2
    config.eval_every_steps = 1000
    config.eval_examples = 32
    config.eval_crop_size = 256
    config.eval_batch_size = 8
    config.grid_examples = 4
    config.log_every_steps = 50
    config.progress_bar = False
    return config
