"""Evaluation: MPJPE-family metrics, the training losses built on them, per-action evaluation of a model on a
dataset, and plots."""
