"""IFCNN image fusion in JAX/Flax."""
