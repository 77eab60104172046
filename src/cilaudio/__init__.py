"""Class-incremental learning for multi-label audio classification."""

__version__ = "0.1.0"
