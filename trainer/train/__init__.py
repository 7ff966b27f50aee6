"""Training recipes that run inside PretrainJob and FineTune pods (under torchrun)."""
