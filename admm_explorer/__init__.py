"""admm_explorer: explore ADMM weight pruning of PyTorch models."""
__version__ = "0.1.0"
