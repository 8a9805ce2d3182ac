"""The package version (its own module, so library code can read it without the root package)."""

__version__ = "0.1.0"
