"""The MONAI Label parts of the app, laid out as MONAI Label's sample apps: settings, configs, infers, trainers,
activelearning, scoring. They wire the plain pieces of :mod:`lesion_app.core` into MONAI Label's tasks."""
