"""The tool's version (recorded in recipes and exported configs)."""

__version__ = "0.2.0"
