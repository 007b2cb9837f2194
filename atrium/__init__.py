"""Atrium: a self-hostable, unified AI platform."""

__all__ = ["__version__"]

__version__ = "0.1.0"
