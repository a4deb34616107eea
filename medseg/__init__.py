"""medseg: transformer-based 3-D medical image analysis on MONAI and Lightning."""

__version__ = "0.1.0"
