"""Analyses of searches and learning rules; importing this package does not load TensorFlow."""
