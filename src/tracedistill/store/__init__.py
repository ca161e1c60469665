"""Trace stores: where problems, traces and verdicts are kept (see :class:`TraceStore`)."""

from tracedistill.store.base import Durability, StoreStats, TraceFilter, TraceStore
from tracedistill.store.jsonl import JsonlTraceStore, TornWriteWarning

__all__ = [
    "Durability",
    "JsonlTraceStore",
    "StoreStats",
    "TornWriteWarning",
    "TraceFilter",
    "TraceStore",
]
