"""Infer tasks: segmentation (every automatic model), the uncertainty map (and the click-guided model)."""
