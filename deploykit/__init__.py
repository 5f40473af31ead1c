"""deploykit: release Django applications over SSH and always bring them back."""

__version__ = "0.1.0"
