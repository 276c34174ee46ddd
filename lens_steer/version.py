"""The lens_steer version, part of every cache key and file it writes."""

__version__ = "0.1.0"
