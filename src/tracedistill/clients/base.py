"""The model-client interface: messages in, one completion out.

:class:`ModelClient` is what evaluation samples through and what teachers wrap with prompts,
request keys, cost and traces. The backends live beside this module, one per provider.
"""

from __future__ import annotations

from collections.abc import Callable

from tracedistill.clients.ratelimit import RateInfo

__all__ = ["Observer"]

#: Called with what each response's headers say about rate limits.
Observer = Callable[[RateInfo], None]
