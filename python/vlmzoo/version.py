"""The package version (the cache keys of pretrained towers include it)."""
__version__ = "0.1.0"
