"""sparsetrain: train sparse models and measure what the sparsity buys."""

__version__ = "0.1.0"
