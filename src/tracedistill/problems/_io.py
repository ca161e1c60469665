"""Deprecated alias of :mod:`tracedistill.problems.rows` (the row readers' earlier, private home).

Import from ``tracedistill.problems`` or ``tracedistill.problems.rows`` instead; this module
goes away in the next release.
"""

from tracedistill.problems.rows import FileRows, HubRows, RowReader, iter_jsonl, open_rows

__all__ = ["FileRows", "HubRows", "RowReader", "iter_jsonl", "open_rows"]
