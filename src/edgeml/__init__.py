"""edgeml: an online-learning daemon for the edge."""

__version__ = "0.1.0"

__all__ = ["__version__"]
