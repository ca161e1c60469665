"""Evaluation: MATH-500, MBPP+ and user benchmarks, sampled greedily, graded, with intervals.

```python
from tracedistill.evaluation import Evaluator, math500, greedy
from tracedistill.clients.openai_compat import OpenAICompatibleSampler

bench = math500("../shared/data/math500_test.jsonl")
sampler = OpenAICompatibleSampler("my-lora", base_url="http://localhost:8000/v1")
async with Evaluator("runs/study") as evaluator:
    base = await evaluator.evaluate(base_sampler, bench, label="base")
    step = await evaluator.evaluate(sampler, bench, label="step-300")
print(step.summary())                 # MATH-500 step-300: 86.4% [83.1, 89.1] (432/500)
print(base.compare(step).summary())   # paired difference, Newcombe interval, exact McNemar
```
"""

from typing import TYPE_CHECKING

from tracedistill import _lazy

if TYPE_CHECKING:
    from tracedistill.clients.base import Completion, Prompt, Sampler, SamplerError, greedy
    from tracedistill.evaluation.benchmarks import (
        Benchmark,
        PromptMode,
        custom_benchmark,
        file_sha256,
        math500,
        mbpp_plus,
    )
    from tracedistill.evaluation.decontamination import DecontaminationReport, decontaminate
    from tracedistill.evaluation.evaluator import Evaluator, answer_text
    from tracedistill.evaluation.results import (
        EvalLog,
        EvalResult,
        EvalStore,
        FormatSummary,
        ProblemOutcome,
        compare,
        format_flags,
    )
    from tracedistill.evaluation.stats import (
        Interval,
        PairedComparison,
        PairedCounts,
        mcnemar_exact,
        paired_counts,
        paired_difference,
        wilson_interval,
    )

#: Public name -> the module defining it, imported on first use (see ``tracedistill._lazy``).
_EXPORTS = {
    "Benchmark": "tracedistill.evaluation.benchmarks",
    "Completion": "tracedistill.clients.base",
    "DecontaminationReport": "tracedistill.evaluation.decontamination",
    "EvalLog": "tracedistill.evaluation.results",
    "EvalResult": "tracedistill.evaluation.results",
    "EvalStore": "tracedistill.evaluation.results",
    "Evaluator": "tracedistill.evaluation.evaluator",
    "FormatSummary": "tracedistill.evaluation.results",
    "Interval": "tracedistill.evaluation.stats",
    "PairedComparison": "tracedistill.evaluation.stats",
    "PairedCounts": "tracedistill.evaluation.stats",
    "ProblemOutcome": "tracedistill.evaluation.results",
    "Prompt": "tracedistill.clients.base",
    "PromptMode": "tracedistill.evaluation.benchmarks",
    "Sampler": "tracedistill.clients.base",
    "SamplerError": "tracedistill.clients.base",
    "answer_text": "tracedistill.evaluation.evaluator",
    "compare": "tracedistill.evaluation.results",
    "custom_benchmark": "tracedistill.evaluation.benchmarks",
    "decontaminate": "tracedistill.evaluation.decontamination",
    "file_sha256": "tracedistill.evaluation.benchmarks",
    "format_flags": "tracedistill.evaluation.results",
    "greedy": "tracedistill.clients.base",
    "math500": "tracedistill.evaluation.benchmarks",
    "mbpp_plus": "tracedistill.evaluation.benchmarks",
    "mcnemar_exact": "tracedistill.evaluation.stats",
    "paired_counts": "tracedistill.evaluation.stats",
    "paired_difference": "tracedistill.evaluation.stats",
    "wilson_interval": "tracedistill.evaluation.stats",
}

__all__ = [
    "Benchmark",
    "Completion",
    "DecontaminationReport",
    "EvalLog",
    "EvalResult",
    "EvalStore",
    "Evaluator",
    "FormatSummary",
    "Interval",
    "PairedComparison",
    "PairedCounts",
    "ProblemOutcome",
    "Prompt",
    "PromptMode",
    "Sampler",
    "SamplerError",
    "answer_text",
    "compare",
    "custom_benchmark",
    "decontaminate",
    "file_sha256",
    "format_flags",
    "greedy",
    "math500",
    "mbpp_plus",
    "mcnemar_exact",
    "paired_counts",
    "paired_difference",
    "wilson_interval",
]

if not TYPE_CHECKING:  # type checkers see the imports above instead
    __getattr__, __dir__ = _lazy.attach(__name__, _EXPORTS, globals())
