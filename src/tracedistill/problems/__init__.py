"""Problem sources: verifiable math and code problem pools, sampled, deduplicated, decontaminated.

```python
from tracedistill.problems import openr1_math, Decontaminator, read_benchmark_texts

math500 = read_benchmark_texts("../shared/data/math500_test.jsonl", id_field="unique_id")
bench = Decontaminator({"MATH-500": math500})
pool = await openr1_math().sample(40_000, seed=0, decontaminate=bench)
print(pool.report.summary())
```
"""

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
    dedup,
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
