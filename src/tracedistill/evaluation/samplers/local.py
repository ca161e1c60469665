"""Moved to :mod:`tracedistill.clients.local` (this path is kept one release)."""

from tracedistill.clients.local import LocalSampler

__all__ = ["LocalSampler"]
