"""Moved to :mod:`tracedistill.clients.local` (this path is kept one release; each use warns)."""

from typing import TYPE_CHECKING

from tracedistill import _lazy

if TYPE_CHECKING:
    from tracedistill.clients.local import LocalSampler as LocalSampler

__all__: list[str] = []  # every name here is deprecated: `import *` takes none

if not TYPE_CHECKING:
    __getattr__ = _lazy.deprecated(
        __name__, {"LocalSampler": "tracedistill.clients.local.LocalSampler"}
    )
