"""Command-line programs of the lesion project (installed as console scripts)."""
