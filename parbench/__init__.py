"""parbench: parity and latency harness for PyTorch models shipped to iPhone."""

__version__ = "0.1.0"
