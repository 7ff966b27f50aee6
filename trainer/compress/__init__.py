"""Model -> model transformations without an optimisation loop: quantization and structured pruning."""
