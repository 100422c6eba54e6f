"""The embedded demo: a few minutes on two CPU cores, nothing to download.

    python -m train.main --config train/configs/demo.py --workdir runs/demo

It trains on photos that ship inside scikit-image (``motorcycle_left`` with depth from
its stereo disparity, so both depth-based and mask-based pairs occur) and validates on
other bundled photos (``chelsea``, ``coffee``, ``coins``). It is a smoke test of the
whole pipeline that still learns something real: the loss falls and the validation
PSNR beats the average of the sources. It is no substitute for training on NYU-D2
(``default.py``).

All values that differ from ``default.py`` are this project's choices for speed on two
CPU cores: 16x16 crops in batches of 32 (IFCNN's receptive field is only 11x11 pixels,
and BatchNorm statistics over many crops are stable), a high learning rate, 1000 steps,
and conv1 frozen (as in the paper) at a fixed DCT filter bank, because no ResNet-101 is
available offline and a random frozen conv1 learns far more slowly (so there is no
perceptual loss either).
"""

from train.configs import default


def get_config():
    config = default.get_config()
    config.name = "demo"
    config.data.source = "skimage"
    config.data.skimage_train = (
        "astronaut",
        "rocket",
        "hubble_deep_field",
        "immunohistochemistry",
        "retina",
        "motorcycle_left",
        "motorcycle_right",
        "camera",
        "brick",
        "grass",
        "gravel",
    )
    config.data.skimage_eval = ("chelsea", "coffee", "coins")
    config.data.crop_size = 16
    config.data.num_threads = 2
    config.conv1_init = "dct"
    config.batch_size = 32
    config.num_train_steps = 1000
    config.learning_rate = 3e-3
    config.warmup_steps = 20
    config.checkpoint_every_steps = 250
    config.keep_checkpoints = 2
    config.eval_every_steps = 250
    config.eval_examples = 16
    config.eval_crop_size = 128
    config.eval_batch_size = 16
    config.log_every_steps = 50
    return config
