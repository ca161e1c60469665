"""Moved to :mod:`tracedistill.clients.tinker` (this path is kept one release; each use warns)."""

from typing import TYPE_CHECKING

from tracedistill import _lazy

if TYPE_CHECKING:
    from tracedistill.clients.tinker import DEFAULT_LIVE_SAMPLERS as DEFAULT_LIVE_SAMPLERS
    from tracedistill.clients.tinker import LiveSamplerLimit as LiveSamplerLimit
    from tracedistill.clients.tinker import TinkerSampler as TinkerSampler

__all__: list[str] = []  # every name here is deprecated: `import *` takes none

if not TYPE_CHECKING:
    __getattr__ = _lazy.deprecated(
        __name__,
        {
            name: f"tracedistill.clients.tinker.{name}"
            for name in ("DEFAULT_LIVE_SAMPLERS", "LiveSamplerLimit", "TinkerSampler")
        },
    )
