"""Models: architectures, training from scratch (pretraining and retraining), checkpoints and
saved unlearned models."""
