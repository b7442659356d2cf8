"""Research programs: the annotation-loop simulator, load and latency tests, a stand-in identity provider."""
