import datetime as dt

import attrs
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracedistill.errors import RecordError
from tracedistill.records import (
    SCHEMA_VERSION,
    CodeTests,
    FinishReason,
    FunctionTests,
    Message,
    Problem,
    ReasoningKind,
    SamplingParams,
    StdioCase,
    TaskKind,
    TokenUsage,
    Trace,
    Verdict,
    VerdictReason,
    request_key,
    split_completion,
)

text = st.text(min_size=1, max_size=60)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def roundtrip(record):
    return type(record).from_dict(orjson.loads(orjson.dumps(record.to_dict())))


@st.composite
def problems(draw):
    kind = draw(st.sampled_from(list(TaskKind)))
    if kind is TaskKind.MATH:
        return Problem(
            kind=kind,
            prompt=draw(text),
            answer=draw(text),
            source=draw(st.text(max_size=10)),
            metadata=draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
        )
    tests = CodeTests(
        asserts=draw(st.lists(text, max_size=3)),
        stdio=[
            StdioCase(stdin=a, stdout=b)
            for a, b in draw(st.lists(st.tuples(text, text), max_size=2))
        ],
        function=FunctionTests(
            entry_point="f",
            base_inputs=draw(st.lists(st.lists(json_values, max_size=3), min_size=1, max_size=3)),
            reference_solution="def f(*a):\n    return 1\n",
            atol=draw(st.floats(min_value=0, max_value=1)),
        ),
    )
    return Problem(kind=kind, prompt=draw(text), tests=tests)


@st.composite
def traces(draw):
    return Trace(
        problem_id=draw(text),
        teacher=draw(text),
        model=draw(text),
        prompt=[Message("user", draw(text))],
        reasoning=draw(st.text(max_size=200)),
        answer=draw(st.text(max_size=200)),
        reasoning_kind=draw(st.sampled_from(list(ReasoningKind))),
        finish_reason=draw(
            st.sampled_from([f for f in FinishReason if f is not FinishReason.ERROR])
        ),
        usage=TokenUsage(
            prompt_tokens=draw(st.integers(0, 10**6)),
            completion_tokens=draw(st.integers(0, 10**6)),
            reasoning_tokens=draw(st.integers(0, 10**6)),
        ),
        cost_usd=draw(st.none() | st.floats(min_value=0, max_value=100)),
        latency_s=draw(st.floats(min_value=0, max_value=1000)),
        attempts=draw(st.integers(1, 10)),
        sample_index=draw(st.integers(0, 100)),
        params=SamplingParams(
            max_tokens=draw(st.integers(1, 10**5)), temperature=draw(st.floats(0, 2))
        ),
        created_at=draw(st.datetimes(timezones=st.just(dt.UTC))),
        metadata=draw(st.dictionaries(st.text(max_size=8), json_values, max_size=3)),
    )


@given(problems())
def test_problem_roundtrip(problem):
    assert roundtrip(problem) == problem


@given(traces())
def test_trace_roundtrip(trace):
    back = roundtrip(trace)
    assert back == trace
    assert back.key == trace.key


@given(st.booleans(), st.dictionaries(st.text(max_size=8), json_values, max_size=3))
def test_verdict_roundtrip(passed, details):
    verdict = Verdict(
        trace_key="k",
        problem_id="p",
        verifier="math",
        verifier_version="1",
        passed=passed,
        reason=VerdictReason.PASSED if passed else VerdictReason.WRONG_ANSWER,
        details=details,
    )
    assert roundtrip(verdict) == verdict


def test_records_carry_schema_version():
    p = Problem(kind="math", prompt="1+1", answer="2")
    assert p.to_dict()["schema"] == SCHEMA_VERSION


def test_newer_schema_is_refused_with_clear_error():
    data = Problem(kind="math", prompt="1+1", answer="2").to_dict()
    data["schema"] = SCHEMA_VERSION + 1
    with pytest.raises(RecordError, match="schema version"):
        Problem.from_dict(data)


def test_problem_id_is_stable_content_hash_unless_given():
    a = Problem(kind="math", prompt="What is 1+1?", answer="2")
    b = Problem(kind="math", prompt="What is 1+1?", answer="2", metadata={"x": 1})
    c = Problem(kind="math", prompt="What is 1+2?", answer="3")
    assert a.id == b.id != c.id
    assert a.id.startswith("math-")
    assert Problem(kind="math", prompt="q", answer="1", id="gsm8k/17").id == "gsm8k/17"


def test_problem_requires_gold():
    with pytest.raises(ValueError, match="gold answer"):
        Problem(kind="math", prompt="q")
    with pytest.raises(ValueError, match="needs tests"):
        Problem(kind="code", prompt="q")
    with pytest.raises(ValueError, match="no test"):
        CodeTests()


def test_function_tests_need_expected_or_reference():
    with pytest.raises(ValueError, match="reference_solution"):
        FunctionTests(entry_point="f", base_inputs=[[1]])
    with pytest.raises(ValueError, match="1 outputs for 2 inputs"):
        FunctionTests(entry_point="f", base_inputs=[[1], [2]], expected_base=[1])


def test_request_key_depends_on_each_part():
    msgs = (Message("user", "hi"),)
    params = SamplingParams(max_tokens=100)
    base = request_key("m", msgs, params, 0)
    assert base == request_key("m", msgs, SamplingParams(max_tokens=100), 0)
    assert base != request_key("m2", msgs, params, 0)
    assert base != request_key("m", (Message("user", "ho"),), params, 0)
    assert base != request_key("m", msgs, SamplingParams(max_tokens=101), 0)
    assert base != request_key("m", msgs, params, 1)


def test_training_view():
    t = Trace(
        problem_id="p",
        teacher="t",
        model="m",
        prompt=[Message("user", "Q")],
        reasoning="think hard",
        answer="\\boxed{2}",
    )
    assert t.messages()[-1] == Message("assistant", "<think>\nthink hard\n</think>\n\n\\boxed{2}")
    assert split_completion(t.completion) == ("think hard", "\\boxed{2}")
    assert split_completion("no think") == ("", "no think")
    assert split_completion("<think>\nunclosed") == ("unclosed", "")


def test_error_trace_needs_message_and_validators_reject_bad_values():
    with pytest.raises(ValueError, match="error message"):
        Trace(
            problem_id="p",
            teacher="t",
            model="m",
            prompt=[Message("user", "Q")],
            finish_reason="error",
        )
    with pytest.raises(ValueError):
        Trace(problem_id="p", teacher="t", model="m", prompt=[Message("user", "Q")], cost_usd=-1.0)
    with pytest.raises(ValueError):
        Message("robot", "x")
    with pytest.raises(ValueError, match="contradicts"):
        Verdict(
            trace_key="k",
            problem_id="p",
            verifier="v",
            verifier_version="1",
            passed=True,
            reason="wrong-answer",
        )


def test_records_are_frozen_and_copy_mappings():
    meta = {"a": 1}
    p = Problem(kind="math", prompt="q", answer="1", metadata=meta)
    meta["a"] = 2
    assert p.metadata == {"a": 1}
    with pytest.raises(AttributeError):
        p.prompt = "x"  # type: ignore[misc]


def test_unknown_field_is_rejected():
    data = Problem(kind="math", prompt="q", answer="1").to_dict()
    data["typo"] = 1
    with pytest.raises(RecordError, match="typo"):
        Problem.from_dict(data)


def _parts(**changes: object) -> dict[str, object]:
    parts: dict[str, object] = {
        "problem_id": "p1",
        "teacher": "t",
        "model": "m",
        "prompt": (Message("user", "what is 2 + 2?"),),
        "params": SamplingParams(max_tokens=32),
        "sample_index": 1,
        "reasoning": "add",
        "answer": "4",
        "reasoning_kind": ReasoningKind.RAW,
        "finish_reason": FinishReason.STOP,
        "usage": TokenUsage(prompt_tokens=3, completion_tokens=5),
        "cost_usd": 0.25,
        "cost_estimated": False,
        "latency_s": 0.5,
        "attempts": 2,
        "metadata": {"response_id": "r"},
        "key": "k1",
    }
    parts.update(changes)
    return parts


def test_assembled_trace_equals_the_validated_one() -> None:
    from tracedistill.records.traces import assemble_trace

    parts = _parts()
    fast = assemble_trace(**parts)  # type: ignore[arg-type]
    slow = Trace(**parts, created_at=fast.created_at)  # type: ignore[arg-type]
    assert fast == slow and fast.to_dict() == slow.to_dict()
    assert fast.metadata is not parts["metadata"]  # copied: the caller's dict stays the caller's
    assert Trace.from_dict(fast.to_dict()) == fast


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"latency_s": -1.0}, "latency_s"),
        ({"latency_s": float("nan")}, "latency_s"),
        ({"cost_usd": float("nan")}, "cost_usd"),
        ({"cost_usd": -0.5}, "cost_usd"),
        ({"attempts": 0}, "attempts"),
        ({"sample_index": -1}, "sample_index"),
        ({"problem_id": ""}, "problem_id"),
        ({"prompt": ()}, "prompt"),
        ({"finish_reason": "nonsense"}, "nonsense"),
        ({"finish_reason": FinishReason.ERROR}, "error message"),
    ],
)
def test_assembled_trace_rejects_what_the_constructor_rejects(
    change: dict[str, object], error: str
) -> None:
    from tracedistill.records.traces import assemble_trace

    with pytest.raises((ValueError, TypeError), match=error):
        assemble_trace(**_parts(**change))  # type: ignore[arg-type]


def test_assembled_trace_converts_what_the_constructor_converts() -> None:
    from tracedistill.records.traces import assemble_trace

    trace = assemble_trace(
        **_parts(
            finish_reason="length",
            reasoning_kind="summary",
            prompt=[{"role": "user", "content": "hi"}],
            usage={"prompt_tokens": 1},
            latency_s=1,
        )  # type: ignore[arg-type]
    )
    assert trace.finish_reason is FinishReason.LENGTH and trace.truncated
    assert trace.reasoning_kind is ReasoningKind.SUMMARY
    assert trace.prompt == (Message("user", "hi"),) and trace.usage.prompt_tokens == 1
    assert isinstance(trace.latency_s, float)


def test_message_of_text_matches_the_constructor() -> None:
    from tracedistill.records import Message

    fast = Message.of_text("user", "hello")
    assert fast == Message(role="user", content="hello") and type(fast) is Message
    assert hash(fast) == hash(Message("user", "hello"))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        fast.content = "changed"  # type: ignore[misc]
    with pytest.raises(ValueError, match="role"):
        Message.of_text("tool", "x")  # not one of the three: the constructor's check and error
    with pytest.raises(TypeError, match="content"):
        Message.of_text("user", 3)  # type: ignore[arg-type]


def test_trusted_builds_the_same_record_as_the_constructor() -> None:
    from tracedistill.records import SamplingParams
    from tracedistill.records.traces import _trusted

    made = _trusted(SamplingParams, 64, 0.5, 1.0, None, 7, ("x",), {})
    assert made == SamplingParams(max_tokens=64, temperature=0.5, seed=7, stop=("x",))
    with pytest.raises(TypeError):
        _trusted(SamplingParams, 64, 0.5)  # a wrong number of values is refused


def test_token_usage_of_counts_matches_the_constructor() -> None:
    from tracedistill.records import TokenUsage

    fast = TokenUsage.of_counts(12, 30, 7)
    assert fast == TokenUsage(prompt_tokens=12, completion_tokens=30, reasoning_tokens=7)
    assert type(fast) is TokenUsage and fast.total_tokens == 42
    assert TokenUsage.of_counts(1, 2) == TokenUsage(prompt_tokens=1, completion_tokens=2)
    with pytest.raises(ValueError, match="completion_tokens"):
        TokenUsage.of_counts(1, -2)  # not a clean count: the constructor's checks and error
    with pytest.raises(ValueError, match="reasoning_tokens"):
        TokenUsage.of_counts(1, 2, -1)
