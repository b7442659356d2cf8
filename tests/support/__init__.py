"""Helpers shared by the tests: paths, drawn studies, odd images, folder fingerprints, viewers."""
