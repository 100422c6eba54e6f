"""ImageNet's per-channel mean and standard deviation (RGB, 0-1 scale): the input
normalisation of torchvision's ImageNet weights, IFCNN's conv1 and the multi-focus
recipe. Kept apart from :mod:`ifcnn_jax.resnet` (which re-exports them) so that fusing
imports neither JAX nor Flax for two constants."""

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
