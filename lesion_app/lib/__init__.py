"""Reusable pieces of the lesion app: networks, losses, transforms, metrics, training engine."""
