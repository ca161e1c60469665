"""Problem sources: verifiable math and code problem pools, sampled, deduplicated, decontaminated.

```python
from tracedistill.problems import openr1_math, Decontaminator, read_benchmark_texts

math500 = read_benchmark_texts("../shared/data/math500_test.jsonl", id_field="unique_id")
bench = Decontaminator({"MATH-500": math500})
pool = await openr1_math().sample(40_000, seed=0, decontaminate=bench)
print(pool.report.summary())
```
"""

from typing import TYPE_CHECKING

from tracedistill import _lazy

# Imported now, not lazily: the function shares its module's name, and importing the module
# `problems.dedup` (which any import of a name from it does) would bind the module here instead.
from tracedistill.problems.dedup import dedup

if TYPE_CHECKING:
    from tracedistill.problems.base import (
        ConcatSource,
        FilteredSource,
        PoolReport,
        ProblemFilter,
        ProblemPool,
        ProblemSource,
        RowSource,
        Skipped,
        SkipReason,
        Validator,
        by_difficulty,
        by_length,
        by_source,
        concat,
        sample_key,
        where,
    )
    from tracedistill.problems.code import (
        CodeContestsRowParser,
        CodeforcesRowParser,
        CodeSource,
        MbppRowParser,
        OpenCodeReasoningSource,
        TacoRowParser,
        apps,
        code_contests,
        codeforces,
        mbpp,
        ocr_problem_id,
        open_code_reasoning,
        parse_input_output,
        taco,
    )
    from tracedistill.problems.dedup import (
        Decontaminator,
        Deduplicator,
        DuplicateKind,
        DuplicatePair,
        Overlap,
        ngram_overlap,
        normalize_text,
        read_benchmark_texts,
        word_ngrams,
    )
    from tracedistill.problems.math import (
        GoldChecker,
        MathRowParser,
        MathSource,
        extract_boxed,
        numina_math,
        openr1_math,
    )
    from tracedistill.problems.rows import FileRows, HubRows, RowReader, iter_jsonl, open_rows

#: Public name -> the module defining it, imported on first use (see ``tracedistill._lazy``).
_EXPORTS = {
    "CodeContestsRowParser": "tracedistill.problems.code",
    "CodeSource": "tracedistill.problems.code",
    "CodeforcesRowParser": "tracedistill.problems.code",
    "ConcatSource": "tracedistill.problems.base",
    "Decontaminator": "tracedistill.problems.dedup",
    "Deduplicator": "tracedistill.problems.dedup",
    "DuplicateKind": "tracedistill.problems.dedup",
    "DuplicatePair": "tracedistill.problems.dedup",
    "FileRows": "tracedistill.problems.rows",
    "FilteredSource": "tracedistill.problems.base",
    "GoldChecker": "tracedistill.problems.math",
    "HubRows": "tracedistill.problems.rows",
    "MathRowParser": "tracedistill.problems.math",
    "MathSource": "tracedistill.problems.math",
    "MbppRowParser": "tracedistill.problems.code",
    "OpenCodeReasoningSource": "tracedistill.problems.code",
    "Overlap": "tracedistill.problems.dedup",
    "PoolReport": "tracedistill.problems.base",
    "ProblemFilter": "tracedistill.problems.base",
    "ProblemPool": "tracedistill.problems.base",
    "ProblemSource": "tracedistill.problems.base",
    "RowReader": "tracedistill.problems.rows",
    "RowSource": "tracedistill.problems.base",
    "SkipReason": "tracedistill.problems.base",
    "Skipped": "tracedistill.problems.base",
    "TacoRowParser": "tracedistill.problems.code",
    "Validator": "tracedistill.problems.base",
    "apps": "tracedistill.problems.code",
    "by_difficulty": "tracedistill.problems.base",
    "by_length": "tracedistill.problems.base",
    "by_source": "tracedistill.problems.base",
    "code_contests": "tracedistill.problems.code",
    "codeforces": "tracedistill.problems.code",
    "concat": "tracedistill.problems.base",
    "extract_boxed": "tracedistill.problems.math",
    "iter_jsonl": "tracedistill.problems.rows",
    "mbpp": "tracedistill.problems.code",
    "ngram_overlap": "tracedistill.problems.dedup",
    "normalize_text": "tracedistill.problems.dedup",
    "numina_math": "tracedistill.problems.math",
    "ocr_problem_id": "tracedistill.problems.code",
    "open_code_reasoning": "tracedistill.problems.code",
    "open_rows": "tracedistill.problems.rows",
    "openr1_math": "tracedistill.problems.math",
    "parse_input_output": "tracedistill.problems.code",
    "read_benchmark_texts": "tracedistill.problems.dedup",
    "sample_key": "tracedistill.problems.base",
    "taco": "tracedistill.problems.code",
    "where": "tracedistill.problems.base",
    "word_ngrams": "tracedistill.problems.dedup",
}

__all__ = [
    "CodeContestsRowParser",
    "CodeSource",
    "CodeforcesRowParser",
    "ConcatSource",
    "Decontaminator",
    "Deduplicator",
    "DuplicateKind",
    "DuplicatePair",
    "FileRows",
    "FilteredSource",
    "GoldChecker",
    "HubRows",
    "MathRowParser",
    "MathSource",
    "MbppRowParser",
    "OpenCodeReasoningSource",
    "Overlap",
    "PoolReport",
    "ProblemFilter",
    "ProblemPool",
    "ProblemSource",
    "RowReader",
    "RowSource",
    "SkipReason",
    "Skipped",
    "TacoRowParser",
    "Validator",
    "apps",
    "by_difficulty",
    "by_length",
    "by_source",
    "code_contests",
    "codeforces",
    "concat",
    "dedup",
    "extract_boxed",
    "iter_jsonl",
    "mbpp",
    "ngram_overlap",
    "normalize_text",
    "numina_math",
    "ocr_problem_id",
    "open_code_reasoning",
    "open_rows",
    "openr1_math",
    "parse_input_output",
    "read_benchmark_texts",
    "sample_key",
    "taco",
    "where",
    "word_ngrams",
]

if not TYPE_CHECKING:  # type checkers see the imports above instead
    __getattr__, __dir__ = _lazy.attach(__name__, _EXPORTS, globals())
