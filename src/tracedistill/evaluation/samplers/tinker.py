"""Moved to :mod:`tracedistill.clients.tinker` (this path is kept one release)."""

from tracedistill.clients.tinker import DEFAULT_LIVE_SAMPLERS, LiveSamplerLimit, TinkerSampler

__all__ = ["DEFAULT_LIVE_SAMPLERS", "LiveSamplerLimit", "TinkerSampler"]
