"""A provider's window read from its reopenings.

A saturated episode (429s clustered in what was sent) shows the provider's window shut; the
first request it accepts among those sent after the episode began shows when it reopened.
What it accepted from one reopening to the next shutting, over the time between the two
reopenings, is its rate: exactly so for a fixed window, about so for a sliding one. The run's
first window is read from the first acceptance (or, with ``Retry-After``, from the opening
burst), an upper bound when the run began partway into a fixed window (a provider's fixed
windows follow its clock, not the client's start): the windows read after it correct that.
A later window is read only when it stayed shut at least half as long as it was open, over
at least 0.9 of the first window's span: a sliding window frees a slot at a time (a second's
``Retry-After``) and reopens in echoes of its own shut time; the first only when it stayed
shut as long as its allowance took (a token bucket refills at once).
"""

from __future__ import annotations

from tracedistill.clients._rateevidence import SendLog
from tracedistill.clients._ratelimits import DIMENSIONS

__all__ = ["Reopenings", "WindowRead"]

#: a window read after the first must last at least this share of the first: a sliding
#: window reopens in echoes of its own shut time, seconds apart, each reading its allowance
#: over a fraction of the window
_LEAST_OF_FIRST = 0.9

#: ...and it must have stayed shut at least this share of the time it was open: a rate read
#: so was at least 1.5x the window's (at 2.5x, as a fixed window joined 60% in reads, a 2 s
#: window was measured open 0.98 s, shut 1.02 s)
_LEAST_SHUT = 0.5

WindowRead = tuple[str, float, float, float]  # (dimension, shut at, rate per second, window s)


class Reopenings:
    """Per dimension: when the provider's window shut and reopened, and the rate read from it.

    Attributes:
        awaiting: a dimension's window is shut and its reopening not yet seen.
    """

    __slots__ = ("_first", "_first_refusal", "_opened", "_refused_at", "_reopened", "awaiting")

    def __init__(self) -> None:
        #: when the watched window shut: its first 429 (None: no window is watched)
        self._refused_at: dict[str, float | None] = dict.fromkeys(DIMENSIONS)
        #: when the watched window opened: the reopening before (None: the run's first window)
        self._opened: dict[str, float | None] = dict.fromkeys(DIMENSIONS)
        self._reopened: dict[str, float | None] = dict.fromkeys(DIMENSIONS)
        #: seconds the first window lasted (None: not read, as a token bucket's is not)
        self._first: dict[str, float | None] = dict.fromkeys(DIMENSIONS)
        #: when the first 429 of a request sent since the last reopening came back: a short
        #: window's shutting follows its reopening within a second, in the same episode
        self._first_refusal: dict[str, float | None] = dict.fromkeys(DIMENSIONS)
        self.awaiting = False

    def last(self, name: str) -> float | None:
        """When dimension ``name``'s window last reopened (None: not seen yet)."""
        return self._reopened[name]

    def refused(self, name: str, sent: float, now: float) -> None:
        """Record a 429, come back at ``now``, of a request sent at ``sent``."""
        reopened = self._reopened[name]
        if self._first_refusal[name] is None and (reopened is None or sent >= reopened):
            self._first_refusal[name] = now

    def shut(self, name: str, episode: float, opened: float | None) -> bool:
        """Watch for the reopening of a window, opened at ``opened`` (None: the run's first),
        that a saturated episode begun at ``episode`` shut; returns whether a watch began (not
        when one is under way, or when nothing sent since the opening was refused yet).
        """
        refusal = self._first_refusal[name]
        if self._refused_at[name] is not None or refusal is None:
            return False
        # the episode's first 429, or the first since the opening when that came later
        refused_at = max(episode, refusal)
        if opened is not None and refused_at <= opened:
            return False
        self._opened[name] = opened
        self._refused_at[name] = refused_at
        self.awaiting = True
        return True

    def first_told(self, name: str, window: float) -> None:
        """Record the run's first window, read from its opening burst and ``Retry-After``."""
        self._first[name] = window

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
            self._first_refusal[name] = None
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
        if sent - refused_at < _LEAST_SHUT * (refused_at - opened):
            # shut briefly: a fixed window just overfilled (a probe), or a sliding window's
            # slot freeing (a second's Retry-After), no sample of a window's length
            return None
        return name, refused_at, log.accepted_between(name, opened, refused_at) / window, window
