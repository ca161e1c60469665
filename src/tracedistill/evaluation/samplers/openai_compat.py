"""Moved to :mod:`tracedistill.clients.openai_compat` (this path is kept one release; each use
warns).
"""

from typing import TYPE_CHECKING

from tracedistill import _lazy

if TYPE_CHECKING:
    from tracedistill.clients.openai_compat import (
        OpenAICompatibleSampler as OpenAICompatibleSampler,
    )

__all__: list[str] = []  # every name here is deprecated: `import *` takes none

if not TYPE_CHECKING:
    __getattr__ = _lazy.deprecated(
        __name__,
        {"OpenAICompatibleSampler": "tracedistill.clients.openai_compat.OpenAICompatibleSampler"},
    )
