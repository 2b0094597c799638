"""Plumbing for the HEBAE companion book.

The models themselves are written on the pages of the book (``book/``); this package holds
what they stand on: data, networks, the training loop, run storage, metrics and plots.
"""

__version__ = "0.1.0"
