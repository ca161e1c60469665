"""The embedded offline default: synthetic verifiable problems and a local rule-based teacher.

Nothing here needs a key or the network. The problems are small enough for a tiny student to
learn something measurable on two CPU cores; the teacher is a deterministic solver that makes a
configurable share of mistakes, so verification has something to filter. ``python -m
tracedistill demo`` runs the whole pipeline on them (see :func:`run_demo`).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from tracedistill.records import (
    FinishReason,
    Message,
    Problem,
    ReasoningKind,
    SamplingParams,
    TaskKind,
    TokenUsage,
)
from tracedistill.teachers.base import Completion, Observer, Teacher, TeacherRequest
from tracedistill.teachers.prompts import PromptSet, PromptTemplate

if TYPE_CHECKING:
    from tracedistill.chat import ChatRenderer, ChatTokenizer
    from tracedistill.report import Results

__all__ = [
    "DEMO_PROMPTS",
    "DEMO_SIZES",
    "SyntheticTeacher",
    "build_demo_student",
    "run_demo",
    "synthetic_problems",
]

#: Short prompts: the demo's student has a context of a few hundred tokens.
DEMO_PROMPTS = PromptSet(
    math=PromptTemplate(user="{prompt}\nPut the final answer in \\boxed{}."),
    code=PromptTemplate(user="{prompt}\nAnswer with a Python code block."),
)

_CODE_TASKS = (
    ("add_{k}", "returns x plus {k}", "x + {k}"),
    ("times_{k}", "returns x times {k}", "x * {k}"),
    ("minus_{k}", "returns x minus {k}", "x - {k}"),
    ("max_{k}", "returns the larger of x and {k}", "max(x, {k})"),
    ("min_{k}", "returns the smaller of x and {k}", "min(x, {k})"),
    ("mod_{k}", "returns x modulo {k}", "x % {k}"),
    ("square_plus_{k}", "returns x squared plus {k}", "x * x + {k}"),
    ("dist_{k}", "returns the distance between x and {k}", "abs(x - {k})"),
)


def synthetic_problems(kind: TaskKind | str, n: int, *, seed: int = 0) -> list[Problem]:
    """Return ``n`` distinct synthetic problems of one kind, the same for the same seed.

    Math: small additions, subtractions and multiplications ("What is 3 + 4?"). Code: one-line
    Python functions ("Write a Python function add_3(x) that returns x plus 3."), with assert
    tests.
    """
    kind = TaskKind(kind)
    rng = random.Random(f"{kind}-{seed}")
    seen: set[str] = set()
    out: list[Problem] = []
    limit = 1000 * max(n, 1)
    while len(out) < n and limit:
        limit -= 1
        if kind is TaskKind.MATH:
            a, b = rng.randint(0, 12), rng.randint(0, 12)
            op = rng.choice("+*-")
            if op == "-" and b > a:
                a, b = b, a
            prompt = f"What is {a} {op} {b}?"
            if prompt in seen:
                continue
            answer = a + b if op == "+" else a * b if op == "*" else a - b
            problem = Problem(
                kind=kind,
                prompt=prompt,
                answer=str(answer),
                source="synthetic-arithmetic",
                metadata={"a": a, "b": b, "op": op},
            )
        else:
            name_t, desc_t, expr_t = rng.choice(_CODE_TASKS)
            k = rng.randint(1, 50)
            name, expr = name_t.format(k=k), expr_t.format(k=k)
            prompt = f"Write a Python function {name}(x) that {desc_t.format(k=k)}."
            if prompt in seen:
                continue
            asserts = [f"assert {name}({x}) == {eval(expr, {'x': x})}" for x in (0, 1, 5, -3)]
            problem = Problem(
                kind=kind,
                prompt=prompt,
                tests={"asserts": asserts},
                source="synthetic-functions",
                metadata={"name": name, "expr": expr},
            )
        seen.add(prompt)
        out.append(problem)
    if len(out) < n:
        raise ValueError(f"only {len(out)} distinct synthetic {kind} problems exist, asked {n}")
    return out


class SyntheticTeacher(Teacher):
    """A local rule-based teacher for the synthetic problems: no model, no network, no cost.

    It writes a short reasoning and the answer in the trained format; ``error_rate`` of its
    answers are wrong on purpose (chosen by a hash of the request key, so reruns agree), which
    gives verification something to filter. It is also a worked example of a user-written
    :class:`Teacher`: one method, :meth:`complete`.
    """

    rate_limited = False
    reports_cost = True  # it says what each answer cost: nothing

    def __init__(self, *, error_rate: float = 0.25, name: str = "synthetic-teacher") -> None:
        super().__init__(
            model="rule-based-solver",
            name=name,
            params=SamplingParams(max_tokens=256, temperature=0.0),
            prompts=DEMO_PROMPTS,
        )
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate!r}")
        self.error_rate = error_rate

    async def complete(
        self, request: TeacherRequest, *, observe: Observer | None = None
    ) -> Completion:
        """Solve one synthetic problem (wrongly, for ``error_rate`` of the requests)."""
        problem = request.problem
        digest = hashlib.sha256(request.key.encode()).digest()
        wrong = digest[0] / 256 < self.error_rate
        meta = problem.metadata
        if problem.kind is TaskKind.MATH:
            a, b, op = int(meta["a"]), int(meta["b"]), str(meta["op"])
            value = a + b if op == "+" else a * b if op == "*" else a - b
            if wrong:
                value += 1 + digest[1] % 3
            word = {"+": "add", "*": "multiply", "-": "subtract"}[op]
            reasoning = f"We {word} {a} and {b}. {a} {op} {b} = {value}."
            answer = f"The answer is \\boxed{{{value}}}."
        else:
            name, expr = str(meta["name"]), str(meta["expr"])
            if wrong:
                expr = expr.replace("x", "(x + 1)", 1)
            reasoning = f"The function {name} takes x and returns {expr}."
            answer = f"```python\ndef {name}(x):\n    return {expr}\n```"
        completion_tokens = (len(reasoning) + len(answer)) // 4
        prompt_tokens = sum(len(m.content) for m in request.messages) // 4
        return Completion(
            reasoning=reasoning,
            answer=answer,
            reasoning_kind=ReasoningKind.RAW,
            finish_reason=FinishReason.STOP,
            usage=TokenUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
            cost_usd=0.0,
        )


#: Sizes of the demo: the README command runs "full"; the tests run "ci".
DEMO_SIZES: dict[str, dict[str, int]] = {
    "full": {"pool": 256, "eval": 64, "steps": 400, "every": 100, "warmup": 150},
    "ci": {"pool": 64, "eval": 16, "steps": 150, "every": 75, "warmup": 100},
}


_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def _corpus(seed: int) -> list[str]:
    """Text of the demo's domain: every synthetic prompt and a worked answer to each."""
    texts: list[str] = []
    for kind in TaskKind:
        for problem in synthetic_problems(kind, 200, seed=seed + 1000):
            texts.append(DEMO_PROMPTS.render(problem)[-1].content)
    sums = (f"We add {a} and {b}. {a} + {b} = {a + b}." for a in range(13) for b in (0, 7))
    texts.append(" ".join(sums))
    texts.append("The answer is \\boxed{12}. ```python\ndef f(x):\n    return max(x, 3)\n```")
    return texts


def demo_tokenizer(seed: int = 0) -> ChatTokenizer:
    """A small byte-level BPE tokenizer (about 600 tokens) for the demo's tiny student.

    A 151k-token vocabulary would make the tiny model almost all embedding table; this one
    covers the synthetic domain (and any text, byte by byte) with the chat format's special
    tokens, so the student is small enough to learn something on two CPU cores.
    """
    import tokenizers
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from tracedistill.chat import ChatTokenizer

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer)
    return ChatTokenizer(tok, name="tracedistill-demo-bpe")


def _warmup_texts(renderer: ChatRenderer, n: int, seed: int) -> list[str]:
    """Chat-formatted chit-chat that teaches the chat structure but not the task's format."""
    rng = random.Random(seed)
    words = " ".join(_corpus(seed)).replace("\\boxed", "").split()
    words = [w for w in words if w.isalnum()][:2000]
    texts = []
    for _ in range(n):
        picked = " ".join(rng.choice(words) for _ in range(rng.randint(2, 6)))
        digits = " ".join(str(rng.randint(0, 99)) for _ in range(rng.randint(2, 5)))
        question, answer = rng.choice(
            [(f"Repeat: {picked}", picked), (f"Repeat the numbers: {digits}", digits)]
        )
        texts.append(
            renderer.render_text([Message("user", question), Message("assistant", answer)])
        )
    return texts


def build_demo_student(directory: Path, *, warmup_steps: int, seed: int = 0) -> Path:
    """Build the demo's tiny Qwen3 student (random weights, then a short warm-up); blocking.

    The student has 4 layers of width 128 and the demo's small tokenizer. The warm-up is
    full-parameter training on chat-formatted chit-chat: it makes the random model a usable
    base for LoRA without teaching it the think-block or answer format that distillation is
    meant to teach.
    """
    from tracedistill.chat import ChatFormat, ChatRenderer
    from tracedistill.training.local import build_tiny_model, warm_up_full

    if (directory / "config.json").is_file() and (directory / "warmed_up").is_file():
        return directory
    tokenizer = demo_tokenizer(seed)
    build_tiny_model(directory, tokenizer=tokenizer, hidden_size=128, num_layers=4, seed=seed)
    renderer = ChatRenderer(tokenizer, ChatFormat.QWEN3)
    warm_up_full(
        directory,
        _warmup_texts(renderer, 512, seed),
        tokenizer=tokenizer,
        steps=warmup_steps,
        batch_size=16,
        learning_rate=3e-3,
    )
    (directory / "warmed_up").write_text("ok\n")
    return directory


async def run_demo(
    directory: str | Path = "runs/demo", *, size: str = "full", progress: bool | None = None
) -> Results:
    """Run the whole pipeline offline on synthetic problems and write the report.

    Two runs (math and code) with :class:`SyntheticTeacher`: generate, verify, keep the
    correct traces, LoRA-train a tiny Qwen3 student on the CPU, evaluate the base student and
    every checkpoint on held-out synthetic problems, and write ``report.md`` and
    ``report.html`` into ``directory``. Returns the results.
    """
    from tracedistill.evaluation.benchmarks import custom_benchmark
    from tracedistill.experiment import Experiment, Run
    from tracedistill.training.base import TrainConfig
    from tracedistill.training.local import LocalTrainer

    if size not in DEMO_SIZES:
        raise ValueError(f"size must be one of {sorted(DEMO_SIZES)}, got {size!r}")
    dims = DEMO_SIZES[size]
    root = Path(directory)
    await anyio.Path(root).mkdir(parents=True, exist_ok=True)
    student = await anyio.to_thread.run_sync(
        lambda: build_demo_student(root / "student-base", warmup_steps=dims["warmup"])
    )
    teacher = SyntheticTeacher()
    runs = []
    benchmarks = []
    for kind, max_tokens in ((TaskKind.MATH, 40), (TaskKind.CODE, 64)):
        problems = synthetic_problems(kind, dims["pool"] + dims["eval"], seed=0)
        pool, held_out = problems[: dims["pool"]], problems[dims["pool"] :]
        benchmarks.append(
            custom_benchmark(
                f"synthetic-{kind}",
                held_out,
                template=DEMO_PROMPTS.for_kind(kind),
                max_tokens=max_tokens,
            )
        )
        runs.append(
            Run(
                name=f"synthetic-{kind}",
                task=kind,
                teacher=teacher,
                problems=pool,
                train=TrainConfig(
                    base_model=str(student),
                    lora_rank=32,
                    batch_size=8,
                    learning_rate=1e-2,
                    max_length=160,
                    epochs=None,
                    max_steps=dims["steps"],
                    checkpoint_every=dims["every"],
                ),
            )
        )
    experiment = Experiment(
        root,
        runs,
        trainer=LocalTrainer(device="cpu"),
        benchmarks=benchmarks,
        base_model=student,
        progress=progress,
    )
    results = await experiment.run()
    (root / "report.md").write_text(results.to_markdown(), encoding="utf-8")
    # matplotlib is the optional `plot` extra: without it, the tables are still written.
    with contextlib.suppress(ImportError):
        results.to_html(root / "report.html", title="tracedistill demo")
    return results
