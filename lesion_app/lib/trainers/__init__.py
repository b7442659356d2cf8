"""The train task: datastore labels -> the one training loop -> the gate -> the served model."""
