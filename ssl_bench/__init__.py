"""ssl-bench: semi-supervised learning algorithms crossed with teacher-smoothing strategies."""

__version__ = "0.1.0"
