"""Property tests: the store behaves like a simple model under any sequence of writes."""

from __future__ import annotations

import tempfile

import anyio
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from tracedistill.records import FinishReason, trace_from_stored
from tracedistill.store import JsonlTraceStore

from ..test_records import traces as trace_strategy
from .conftest import make_problem, make_trace

PROBLEMS = [make_problem(i) for i in range(3)]

ops = st.lists(
    st.tuples(
        st.integers(0, 2),  # problem
        st.integers(0, 2),  # sample index
        st.booleans(),  # ok (else a failed attempt)
        st.integers(0, 3),  # cost in cents
        st.booleans(),  # write through add_traces (batch) instead of add_trace
    ),
    max_size=30,
)


@settings(max_examples=40, deadline=None)
@given(ops)
def test_store_matches_model(operations: list[tuple[int, int, bool, int, bool]]) -> None:
    model: dict[str, object] = {}  # key -> the trace that should count
    spend = 0.0
    with tempfile.TemporaryDirectory() as tmp:

        async def main() -> None:
            nonlocal spend
            with JsonlTraceStore(tmp) as store:
                await store.add_problems(PROBLEMS)
                for p, sample, ok, cents, batch in operations:
                    kw: dict[str, object] = {"cost_usd": cents / 100}
                    if not ok:
                        kw.update(finish_reason=FinishReason.ERROR, error="boom")
                    trace = make_trace(PROBLEMS[p], sample, **kw)
                    current = model.get(trace.key)
                    expect = current is None or (not current.ok and trace.ok)  # type: ignore[attr-defined]
                    if batch:
                        written = await store.add_traces([trace]) == 1
                    else:
                        written = await store.add_trace(trace)
                    assert written == expect
                    if written:
                        model[trace.key] = trace
                        spend += trace.cost_usd or 0.0

        anyio.run(main)
        with JsonlTraceStore(tmp, readonly=True) as store:
            for key, trace in model.items():
                assert store.get(key) == trace
                assert store.has(key) == trace.ok  # type: ignore[attr-defined]
            listed = list(store.traces(include_failed=True))
            assert {t.key for t in listed} == set(model)
            assert len(listed) == len(model)
            assert abs(store.spend_usd() - spend) < 1e-9


@given(trace_strategy())
def test_fast_stored_reader_equals_validated_reader(trace) -> None:  # type: ignore[no-untyped-def]
    data = orjson.loads(orjson.dumps(trace.to_dict()))
    assert trace_from_stored(data) == trace
