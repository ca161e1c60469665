"""The sampler interface, now :mod:`tracedistill.clients.base` (this path is kept one release).

Each name used from here warns (``DeprecationWarning``) and is the object in
:mod:`tracedistill.clients.base`.
"""

from typing import TYPE_CHECKING

from tracedistill import _lazy

if TYPE_CHECKING:
    from tracedistill.clients.base import Completion as Completion
    from tracedistill.clients.base import ModelClient as ModelClient
    from tracedistill.clients.base import Prompt as Prompt
    from tracedistill.clients.base import Sampler as Sampler
    from tracedistill.clients.base import SamplerError as SamplerError
    from tracedistill.clients.base import greedy as greedy
    from tracedistill.clients.base import prompt_text as prompt_text

__all__: list[str] = []  # every name here is deprecated: `import *` takes none

_MOVED = ("Completion", "ModelClient", "Prompt", "Sampler", "SamplerError", "greedy", "prompt_text")

if not TYPE_CHECKING:
    __getattr__ = _lazy.deprecated(
        __name__, {name: f"tracedistill.clients.base.{name}" for name in _MOVED}
    )
