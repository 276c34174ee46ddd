"""lens_steer: steering-vector research on TransformerLens models."""
__version__ = "0.1.0"
