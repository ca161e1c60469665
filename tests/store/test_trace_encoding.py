"""A trace's JSONL line is its ``to_dict`` whatever the encoder's shortcuts: the sampling
parameters encoded once per parameters object (issue 12, client CPU) included."""

from __future__ import annotations

import orjson

from tracedistill import _json
from tracedistill.records import FinishReason, Message, SamplingParams, TokenUsage, Trace


def _trace(params: SamplingParams | None, index: int) -> Trace:
    return Trace(
        problem_id="p1",
        teacher="t",
        model="m",
        prompt=(Message("user", f"question {index}"),),
        params=params,
        sample_index=index,
        answer=str(index),
        finish_reason=FinishReason.STOP,
        usage=TokenUsage(prompt_tokens=3, completion_tokens=5),
        key=f"k{index}",
    )


def test_lines_match_the_general_encoding_as_parameters_change() -> None:
    first = SamplingParams(max_tokens=32, stop=("</a>",), extra={"reasoning": {"effort": "low"}})
    second = SamplingParams(max_tokens=64, temperature=0.0)
    equal_to_first = SamplingParams(
        max_tokens=32, stop=("</a>",), extra={"reasoning": {"effort": "low"}}
    )
    for index, params in enumerate([first, first, second, None, equal_to_first, first, second]):
        trace = _trace(params, index)
        line = trace.to_jsonl()
        assert line == _json.dumps(trace.to_dict(), newline=True)
        assert orjson.loads(line)["params"] == (None if params is None else params.to_dict())


def test_parameters_the_fast_encoder_cannot_write_take_the_general_path() -> None:
    big = SamplingParams(max_tokens=8, extra={"seed_space": 2**70})  # beyond 64-bit integers
    for index in range(2):
        trace = _trace(big, index)
        line = trace.to_jsonl()
        assert line.endswith(b"\n")
        assert orjson.loads(line.replace(b"1180591620717411303424", b"0"))["key"] == f"k{index}"
        assert line == _json.dumps(trace.to_dict(), newline=True)
