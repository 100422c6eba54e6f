"""Training data: sharp-photo collections, multi-focus synthesis, dataset files."""
