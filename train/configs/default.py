"""The paper's set-up: IFCNN trained on multi-focus pairs synthesised from NYU Depth V2.

Usage::

    python -m train.main --config train/configs/default.py --workdir runs/nyu \
        --config.conv1_checkpoint=checkpoints/resnet101 \
        --config.resnet_checkpoint=checkpoints/resnet101

Every value marked PAPER comes from Zhang et al. (Information Fusion 2020) or the
authors' README; every value marked CHOICE is this project's choice, because the paper
does not state it.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.name = "default"

    # ---- data -------------------------------------------------------------------
    config.data = ml_collections.ConfigDict()
    # Where sharp photos come from: "tfds" (an RGB-D TFDS set), "folder" or "skimage".
    config.data.source = "tfds"
    config.data.tfds_name = "nyu_depth_v2"  # PAPER: NYU-D2 RGB-D photos (TFDS's version of it).
    config.data.tfds_data_dir = ""  # "" = the TFDS default (~/tensorflow_datasets).
    config.data.train_split = "train"
    config.data.eval_split = "validation"  # Held-out photos for the synthetic validation pairs.
    # source="folder": photos (and optional depth maps NAME.npy / NAME.png, larger = farther).
    config.data.folder = ""
    config.data.depth_folder = ""
    config.data.eval_folder = ""  # "" = hold out the last `eval_holdout` photos of `folder`.
    config.data.eval_holdout = 8
    # source="skimage": photos bundled with scikit-image (see ifcnn_jax.data.photos.SKIMAGE_PHOTOS).
    config.data.skimage_train = ()
    config.data.skimage_eval = ()
    config.data.focus_map = "auto"  # PAPER: split by depth (auto = depth when the photo has it).
    config.data.num_sources = 2  # PAPER: pairs. CHOICE: >2 trains with N focus planes.
    config.data.blur_radius_min = 2  # CHOICE: the paper's kr range is not stated.
    config.data.blur_radius_max = 8  # CHOICE.
    config.data.crop_size = 128  # CHOICE: random square crops of the 480x640 photos.
    config.data.flip = True  # CHOICE: random left-right mirroring.
    # CHOICE: probability of a random colour transform per training example (channel
    # permutation, saturation, gain; train/augment.py). 0 = off, as in the paper.
    config.data.colour_augment = 0.0
    config.data.num_threads = 4  # Grain threads that synthesise examples (host CPU).
    config.data.prefetch = 4  # Batches prepared ahead of the train step.
    config.data.cache_size = 32  # Decoded photos kept in memory (folder source).

    # ---- model ------------------------------------------------------------------
    config.fuse_rule = "max"  # PAPER: IFCNN-MAX is the multi-focus model.
    # A converted ResNet-101 (python convert/from_torch.py resnet101 ...) or any IFCNN
    # checkpoint: conv1 starts from its conv1 (PAPER: ImageNet ResNet-101's conv1).
    # "" = He-random conv1.
    config.conv1_checkpoint = ""
    # Without conv1_checkpoint: "random" (He) or "dct", a fixed filter bank standing in
    # for ResNet-101's conv1 (train/conv1_filters.py). CHOICE.
    config.conv1_init = "random"
    config.freeze_conv1 = True  # PAPER: conv1 is frozen.
    # CHOICE: "he" (the reference's init of every conv) or "zeros" for the 1x1 output conv4.
    config.conv4_init = "he"
    # CHOICE: a model to start from instead (an exported model folder, a .pth or a shipped
    # name such as "ifcnn-jax-mf"): its parameters and BatchNorm statistics, all of them
    # (conv1_checkpoint, conv1_init and conv4_init are then not used). For fine-tuning.
    config.init_model = ""
    # CHOICE: how BatchNorm normalises while training. "batch": with each batch's
    # statistics, updating the running averages (PyTorch's and the paper's way).
    # "frozen": with the running statistics, which stay fixed, as at inference; for
    # fine-tuning a model whose statistics were re-estimated (train/precise_bn.py).
    config.batch_norm = "batch"

    # ---- loss: pixel MSE + perceptual_weight * perceptual ----------------------------
    config.pixel_weight = 1.0  # CHOICE.
    config.perceptual_weight = 1.0  # CHOICE: the paper's lambda is not stated.
    # A converted ResNet-101 for the perceptual loss; "" turns the perceptual term off.
    config.resnet_checkpoint = ""
    config.perceptual_taps = ("layer1",)  # CHOICE: the paper does not name the layers.
    config.perceptual_tap_weights = (1.0,)

    # ---- optimisation -------------------------------------------------------------
    config.optimizer = "adam"  # CHOICE: one of adam, adamw, sgd.
    config.learning_rate = 1e-4  # CHOICE: peak learning rate.
    config.lr_schedule = "cosine"  # CHOICE: constant or cosine (after linear warm-up).
    config.warmup_steps = 1000  # CHOICE.
    config.weight_decay = 0.0  # adamw only.
    config.momentum = 0.9  # sgd only.
    config.grad_clip_norm = 0.0  # 0 = no clipping.
    config.batch_size = 16  # CHOICE: global batch over all devices and processes.
    config.num_train_steps = 100_000  # CHOICE.
    # Stop (with a checkpoint) after this many steps of one invocation, 0 = never: for
    # job slots shorter than the run; the next invocation resumes exactly.
    config.steps_per_run = 0
    config.seed = 0

    # ---- checkpoints, evaluation, logs ---------------------------------------------
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3
    config.eval_every_steps = 2000
    config.eval_examples = 64  # Held-out synthetic pairs, fixed for the whole run.
    config.eval_crop_size = 256
    config.eval_batch_size = 8
    config.eval_seed = 1234
    config.eval_pairs_folder = ""  # Optional folder of real source pairs (e.g. Lytro), fused at each eval.
    config.grid_examples = 4  # Rows of the PNG grid written at each evaluation.
    config.log_every_steps = 50
    config.progress_bar = True
    config.export_dir = ""  # "" = <workdir>/model, loadable by ifcnn-fuse --model.
    return config
