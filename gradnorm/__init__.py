"""gradnorm-repro: a reproduction suite for GradNorm (Chen et al., ICML 2018)."""

__version__ = "0.1.0"
