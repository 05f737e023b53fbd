"""lfcc-deploy: distil a large vision model into a small one of another family, export it, prove it."""
__version__ = "0.1.0"
