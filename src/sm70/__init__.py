"""sm70: build, check and serve an on-premises medical language model."""

__version__ = "0.1.0"
