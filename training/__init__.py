"""Training: simulated refocus pairs, the stacking-constraint LoRA trainer, configs and checkpoints."""
