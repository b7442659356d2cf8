"""Shared contract testers (the segmentation_models.pytorch habit): one class per kind of part, reused in a few lines
by every network, strategy, datastore, infer task and program."""
