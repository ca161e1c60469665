from __future__ import annotations

from pathlib import Path

import pytest

from tracedistill.problems import (
    Decontaminator,
    Deduplicator,
    DuplicateKind,
    dedup,
    ngram_overlap,
    normalize_text,
    read_benchmark_texts,
    word_ngrams,
)

from .conftest import MATH500, MBPPPLUS, write_jsonl


def test_normalize_lowercases_and_collapses_whitespace() -> None:
    assert normalize_text("  What IS\t2 +\n\n 2? ") == "what is 2 + 2?"


def test_word_ngrams_counts_and_short_texts() -> None:
    text = " ".join(f"w{i}" for i in range(10))
    grams = word_ngrams(text, 8)
    assert len(grams) == 3
    assert "w0 w1 w2 w3 w4 w5 w6 w7" in grams
    assert word_ngrams("Compute  2+2.", 8) == {"compute 2+2."}
    assert word_ngrams("   ", 8) == set()
    with pytest.raises(ValueError, match="n-gram"):
        word_ngrams("a b", 0)


def test_deduplicator_exact_normalized_and_id() -> None:
    seen = Deduplicator()
    assert seen.check("a", "Find x if 2x = 4.") is None
    exact = seen.check("b", "Find x if 2x = 4.")
    assert exact is not None and exact.kind is DuplicateKind.EXACT and exact.kept_id == "a"
    normalized = seen.check("c", "find  X if 2x = 4.")
    assert normalized is not None and normalized.kind is DuplicateKind.NORMALIZED
    same_id = seen.check("a", "something else entirely")
    assert same_id is not None and same_id.kind is DuplicateKind.ID
    assert seen.check("d", "Find y if 2y = 4.") is None
    assert len(seen) == 2


def test_dedup_is_lazy_and_reports_pairs() -> None:
    pairs: list = []
    items = iter([("1", "A b"), ("2", "a  B"), ("3", "c")])
    out = dedup(items, pairs)
    assert next(out) == ("1", "A b")
    assert next(out) == ("3", "c")
    assert [(p.kept_id, p.dropped_id) for p in pairs] == [("1", "2")]


def test_decontaminator_finds_shared_8grams_not_7grams() -> None:
    bench = {"b1": "one two three four five six seven eight nine ten"}
    index = Decontaminator({"bench": bench})
    hit = index.overlaps("t1", "Prefix ONE two three four  five six seven eight suffix")
    assert [(o.benchmark, o.benchmark_id, o.shared) for o in hit] == [("bench", "b1", 1)]
    assert hit[0].ngram == "one two three four five six seven eight"
    assert index.overlaps("t2", "one two three four five six seven nine") == []
    assert index.is_contaminated("x one two three four five six seven eight")
    assert not index.is_contaminated("completely different text")


def test_ngram_overlap_accepts_plain_texts_and_names_pairs() -> None:
    bench = ["alpha beta gamma delta epsilon zeta eta theta", "short one"]
    train = [("p1", "x alpha beta gamma delta epsilon zeta eta theta y"), ("p2", "Short  ONE")]
    found = ngram_overlap(train, bench, benchmark_name="toy")
    assert {(o.problem_id, o.benchmark_id) for o in found} == {("p1", "0"), ("p2", "1")}


@pytest.mark.skipif(not MATH500.exists(), reason="../shared/data/math500_test.jsonl missing")
def test_planted_math500_problem_is_caught() -> None:
    math500 = read_benchmark_texts(MATH500, id_field="unique_id")
    assert len(math500) == 500
    index = Decontaminator({"MATH-500": math500})
    planted_id, planted = next(iter(math500.items()))
    # reformatted and embedded in a longer prompt: still caught
    text = "Solve the following.\n\n" + planted.upper().replace(" ", "   ")
    hits = index.overlaps("train-1", text)
    assert planted_id in {o.benchmark_id for o in hits}
    assert index.overlaps("train-2", "What is the sum of the first ten primes?") == []


def test_read_benchmark_texts_keeps_big_ints(tmp_path: Path) -> None:
    big = 123456789012345678901234567890
    path = write_jsonl(tmp_path / "b.jsonl", [{"task_id": "T/1", "prompt": "p", "x": big}])
    assert read_benchmark_texts(path, text_field="prompt", id_field="task_id") == {"T/1": "p"}
    from tracedistill.problems._io import iter_jsonl

    assert next(iter_jsonl(path))["x"] == big
    with pytest.raises(ValueError, match="no field"):
        read_benchmark_texts(path, text_field="missing")


@pytest.mark.skipif(not MBPPPLUS.exists(), reason="../shared/data/mbppplus_378.jsonl missing")
def test_mbppplus_file_reads_exactly() -> None:
    from tracedistill.problems._io import iter_jsonl

    rows = list(iter_jsonl(MBPPPLUS))
    assert len(rows) == 378
    ints = [v for r in rows for v in _ints(r["plus_input"])]
    assert any(abs(v) > 2**63 for v in ints)


def _ints(value: object) -> list[int]:
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if isinstance(value, list | tuple):
        return [i for v in value for i in _ints(v)]
    if isinstance(value, dict):
        return [i for v in value.values() for i in _ints(v)]
    return []


def test_jsonl_lines_orjson_refuses_are_read_by_json(tmp_path: Path) -> None:
    from tracedistill.problems._io import iter_jsonl

    path = tmp_path / "nan.jsonl"
    path.write_text('{"x": NaN, "y": -Infinity}\n{"x": 18446744073709551616}\n{"x": 1.5}\n')
    rows = list(iter_jsonl(path))
    assert rows[0]["x"] != rows[0]["x"] and rows[0]["y"] == float("-inf")
    assert rows[1]["x"] == 18446744073709551616 and isinstance(rows[1]["x"], int)
    assert rows[2]["x"] == 1.5
