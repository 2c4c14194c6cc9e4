"""Video Surveillance News: the email digest service."""

__version__ = "0.1.0"
