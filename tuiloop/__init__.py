"""tuiloop: a terminal UI training monitor for PyTorch."""

__version__ = "0.1.0"
