"""atss-bench: reproduce and extend the ATSS paper's sample-selection experiments."""

__version__ = "0.1.0"
