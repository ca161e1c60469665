"""A provider's window read from its reopenings, when its 429s carry no ``Retry-After``.

A saturated episode (429s clustered in what was sent) shows the provider's window shut; the
first request it accepts among those sent after the episode began shows when it reopened.
What it accepted from one reopening to the next shutting, over the time between the two
reopenings, is its rate: exactly so for a fixed window, about so for a sliding one. The run's
first window is read from the first acceptance instead, an upper bound when the run began
partway into a fixed window (a provider's fixed windows follow its clock, not the client's
start): the windows read after it correct that.
"""

from __future__ import annotations

from tracedistill.clients._rateevidence import SendLog
from tracedistill.clients._ratelimits import DIMENSIONS

__all__ = ["Reopenings", "WindowRead"]

#: a window read after the first must last at least this share of the first: a sliding
#: window reopens in echoes of its own shut time, seconds apart, each reading its allowance
#: over a fraction of the window
_LEAST_OF_FIRST = 0.9

WindowRead = tuple[str, float, float, float]  # (dimension, shut at, rate per second, window s)


class Reopenings:
    """Per dimension: when the provider's window shut and reopened, and the rate read from it.

    Attributes:
        awaiting: a dimension's window is shut and its reopening not yet seen.
    """

    __slots__ = ("_first", "_opened", "_refused_at", "_reopened", "awaiting")

    def __init__(self) -> None:
        #: the start of the saturated episode whose window is watched (None: none is)
        self._refused_at: dict[str, float | None] = dict.fromkeys(DIMENSIONS)
        #: when the watched window opened: the reopening before (None: the run's first window)
        self._opened: dict[str, float | None] = dict.fromkeys(DIMENSIONS)
        self._reopened: dict[str, float | None] = dict.fromkeys(DIMENSIONS)
        #: seconds the first window read lasted (None: not read, as a token bucket's is not)
        self._first: dict[str, float | None] = dict.fromkeys(DIMENSIONS)
        self.awaiting = False

    def last(self, name: str) -> float | None:
        """When dimension ``name``'s window last reopened (None: not seen yet)."""
        return self._reopened[name]

    def shut(self, name: str, episode: float) -> bool:
        """Watch for the reopening of the window the saturated episode begun at ``episode``
        shut; returns whether a watch began (not when one is under way, or when the episode
        began before the last reopening: it is the one that reopening ended).
        """
        reopened = self._reopened[name]
        if self._refused_at[name] is not None or (reopened is not None and episode <= reopened):
            return False
        self._opened[name] = reopened
        self._refused_at[name] = episode
        self.awaiting = True
        return True

    def read(self, sent: float, log: SendLog, reached: dict[str, float | None]) -> list[WindowRead]:
        """The windows an accepted request, sent at ``sent``, shows reopened, with their rates.

        ``reached``: per dimension, about when the first requests reached the provider.
        """
        reads: list[WindowRead] = []
        waiting = False
        for name, refused_at in self._refused_at.items():
            if refused_at is None:
                continue
            if sent < refused_at:
                waiting = True
                continue
            opened, self._reopened[name], self._refused_at[name] = self._opened[name], sent, None
            if opened is None:
                read = self._first_window(name, refused_at, sent, log, reached[name])
            else:
                read = self._later_window(name, opened, refused_at, sent, log)
            if read is not None:
                reads.append(read)
        self.awaiting = waiting
        return reads

    def _first_window(
        self, name: str, refused_at: float, sent: float, log: SendLog, since: float | None
    ) -> WindowRead | None:
        """The run's first window: its allowance over the time from its first acceptance."""
        first = log.first_send
        rate = log.accepted_rate(name, refused_at, None)
        if since is None or first is None or rate is None:
            return None
        if sent - refused_at < max(0.25, refused_at - since):
            return None  # it hardly shut (a token bucket refilling): no window to read
        allowance = rate * max(0.05, min(log.horizon, refused_at - first))
        # the window counts from the first acceptance (about when the first requests reached
        # the provider), not the first refusal: an allowance let in over a third of a 2 s
        # window read 1.47x the limit
        window = max(0.05, min(log.horizon, sent - since))
        self._first[name] = window
        return name, refused_at, allowance / window, window

    def _later_window(
        self, name: str, opened: float, refused_at: float, sent: float, log: SendLog
    ) -> WindowRead | None:
        """A window after the first: what it accepted from its opening to its shutting, over
        the time from its opening to its reopening.
        """
        first = self._first[name]
        window = sent - opened
        if first is None or window > log.horizon or window < _LEAST_OF_FIRST * first:
            return None
        return name, refused_at, log.accepted_between(name, opened, refused_at) / window, window
