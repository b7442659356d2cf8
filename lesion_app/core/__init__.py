"""The plain machine-learning pieces: torch and MONAI only, nothing of MONAI Label, FastAPI or the server."""
