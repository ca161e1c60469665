"""The embedded offline default: synthetic verifiable problems and a local rule-based teacher.

Nothing here needs a key or the network. The problems are small enough for a tiny student to
learn something measurable on two CPU cores; the teacher is a deterministic solver that makes a
configurable share of mistakes, so verification has something to filter. ``python -m
tracedistill demo`` runs the whole pipeline on them (see :func:`run_demo`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from tracedistill.prompts import PromptSet, PromptTemplate
from tracedistill.records import (
    FinishReason,
    Message,
    Problem,
    ReasoningKind,
    SamplingParams,
    TaskKind,
    TokenUsage,
)
from tracedistill.teachers.base import Observer, Teacher, TeacherCompletion, TeacherRequest

if TYPE_CHECKING:
    from tracedistill.chat import ChatRenderer, ChatTokenizer
    from tracedistill.clients.base import Sampler
    from tracedistill.experiment import Run
    from tracedistill.experiment.config import ExperimentSamplerFactory
    from tracedistill.report import Results
    from tracedistill.training.base import TrainConfig

__all__ = [
    "DEMO_MAX_TOKENS",
    "DEMO_PROMPTS",
    "DEMO_SIZES",
    "SyntheticTeacher",
    "build_demo_student",
    "code_steps",
    "demo_sampler_factory",
    "demo_train_config",
    "math_steps",
    "pretraining_problems",
    "run_demo",
    "synthetic_problems",
    "worked_solution",
]

#: Short prompts: the demo's student has a context of a few hundred tokens.
DEMO_PROMPTS = PromptSet(
    math=PromptTemplate(user="{prompt}\nPut the final answer in \\boxed{}."),
    code=PromptTemplate(user="{prompt}\nAnswer with a Python code block."),
)


def _math_problem(a: int, b: int) -> Problem:
    return Problem(
        kind=TaskKind.MATH,
        prompt=f"What is {a} + {b}?",
        answer=str(a + b),
        source="synthetic-addition",
        metadata={"a": a, "b": b, "op": "+"},
    )


def _code_problem(a: int, c: int) -> Problem:
    s = a + c
    asserts = [f"assert f({x}) == {x + c}" for x in (a, 0, 1, -3)]
    return Problem(
        kind=TaskKind.CODE,
        prompt=f"Write a Python function f(x) that adds a constant to x, with f({a}) == {s}.",
        tests={"asserts": asserts},
        source="synthetic-functions",
        metadata={"name": "f", "a": a, "s": s, "expr": f"x + {c}"},
    )


def synthetic_problems(kind: TaskKind | str, n: int, *, seed: int = 0) -> list[Problem]:
    """Return ``n`` distinct synthetic problems of one kind, the same for the same seed.

    Math: additions of two 2-digit numbers ("What is 47 + 85?"; 8,100 exist). Code: a Python
    function given by one example ("Write a Python function f(x) that adds a constant to x,
    with f(47) == 132."; the constant is 2-digit and the example's value 3-digit; 4,905
    exist), checked by assert tests at the example and at other points. Every prompt of a kind
    has the same shape, so the operands sit at the same token positions: a tiny student needs
    to learn what to do with them, not where to find them.
    """
    kind = TaskKind(kind)
    rng = random.Random(f"{kind}-{seed}")
    pairs = [(a, b) for a in range(10, 100) for b in range(10, 100)]
    if kind is TaskKind.CODE:
        pairs = [(a, c) for a, c in pairs if a + c >= 100]
    if n > len(pairs):
        raise ValueError(f"only {len(pairs)} distinct synthetic {kind} problems exist, asked {n}")
    make = _math_problem if kind is TaskKind.MATH else _code_problem
    return [make(a, b) for a, b in rng.sample(pairs, n)]


def math_steps(a: int, b: int, *, slip: int = 0) -> tuple[str, int]:
    """Column addition of ``a + b`` written one column a line, and the result.

    For 47 + 85 the lines are ``7+5=12`` and ``4+8+1=13``: each line adds one column and the
    carry of the line before, and writes its sum with two digits (the first is the next carry),
    so every line has the same shape. ``slip`` is added to the ones column's sum (a teacher's
    mistake, carried through to the result).
    """
    ones = a % 10 + b % 10 + slip
    tens = a // 10 + b // 10 + ones // 10
    lines = f"{a % 10}+{b % 10}={ones:02d}\n{a // 10}+{b // 10}+{ones // 10}={tens:02d}"
    return lines, tens * 10 + ones % 10


def code_steps(a: int, s: int, *, slip: int = 0) -> tuple[str, int]:
    """Column subtraction ``s - a`` (the constant of ``f(a) == s``) one column a line, and it.

    For f(47) == 132 the lines are ``12-7=5`` and ``13-4-1=8``: the first subtracts the ones
    digits, borrowing ten when it must (written as the first number's leading digit, 0 or 1);
    the second subtracts the tens digit and the borrow from the hundreds and tens of ``s``. So
    every line has the same shape, like :func:`math_steps`. ``slip`` is added to the ones
    digit of the constant (a teacher's mistake, carried through to the result).
    """
    borrow = int(s % 10 < a % 10)
    ones = (s % 10 + 10 * borrow - a % 10 + slip) % 10
    tens = s // 10 - a // 10 - borrow
    lines = f"{s % 10 + 10 * borrow:02d}-{a % 10}={ones}\n{s // 10}-{a // 10}-{borrow}={tens}"
    return lines, tens * 10 + ones


class SyntheticTeacher(Teacher):
    """A local rule-based teacher for the synthetic problems: no model, no network, no cost.

    It writes a short reasoning and the answer in the trained format; ``error_rate`` of its
    answers are wrong on purpose (chosen by a hash of the request key, so reruns agree), which
    gives verification something to filter. With ``steps=False`` it writes the same answers
    (the same slips on the same problems: the key does not depend on the teacher's name) with
    no reasoning, the demo's answer-only ablation. It is also a worked example of a user-written
    :class:`Teacher`: one method, :meth:`complete`.
    """

    rate_limited = False
    reports_cost = True  # it says what each answer cost: nothing

    def __init__(
        self, *, error_rate: float = 0.25, name: str = "synthetic-teacher", steps: bool = True
    ) -> None:
        super().__init__(
            model="rule-based-solver",
            name=name,
            params=SamplingParams(max_tokens=256, temperature=0.0),
            prompts=DEMO_PROMPTS,
        )
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate!r}")
        self.error_rate = error_rate
        self.steps = steps

    async def complete(
        self, request: TeacherRequest, *, observe: Observer | None = None
    ) -> TeacherCompletion:
        """Solve one synthetic problem (wrongly, for ``error_rate`` of the requests)."""
        problem = request.problem
        digest = hashlib.sha256(request.key.encode()).digest()
        wrong = digest[0] / 256 < self.error_rate
        # A slip is a wrong digit carried to the answer: verification catches it.
        reasoning, answer = worked_solution(problem, slip=1 + digest[1] % 3 if wrong else 0)
        if not self.steps:
            reasoning = ""  # the answer-only ablation: the same answer, no steps
        # The prompt is sized as rate limits and the plan size it; the answer at the same
        # four characters a token.
        prompt_tokens = self.estimate_input_tokens(request)
        completion_tokens = (len(reasoning) + len(answer)) // 4
        return TeacherCompletion(
            reasoning=reasoning,
            answer=answer,
            reasoning_kind=ReasoningKind.RAW if reasoning else ReasoningKind.NONE,
            finish_reason=FinishReason.STOP,
            usage=TokenUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens),
            cost_usd=0.0,
        )


#: Sizes of the demo: the README command runs "full"; the tests run "ci". ``pool``: problems the
#: teacher answers per task; ``eval``: held-out problems per task; ``steps`` and ``every``: LoRA
#: steps and the checkpoint interval; ``batch``: sequences per step; ``warmup``: full-parameter
#: pre-training steps of the base student (see :func:`build_demo_student`).
DEMO_SIZES: dict[str, dict[str, int]] = {
    "full": {"pool": 512, "eval": 100, "steps": 200, "every": 50, "batch": 32, "warmup": 800},
    "ci": {"pool": 512, "eval": 100, "steps": 200, "every": 100, "batch": 32, "warmup": 800},
}

#: Evaluation ``max_tokens`` per task: the teacher's longest completion in the student's
#: tokens (28 for math, 38 for code) plus its end token and a small margin. Every problem of a
#: task has the same shape, so a longer answer is a wrong one; untrained students stop here.
DEMO_MAX_TOKENS = {TaskKind.MATH: 32, TaskKind.CODE: 42}


#: Worked problems of each task in the base student's pre-training (see build_demo_student).
_WARMUP_PER_TASK = 256

#: The base student's recipe, written beside it: a change here rebuilds existing students.
_STUDENT_RECIPE = f"demo-student-v2 pretrain-per-task={_WARMUP_PER_TASK}"

_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]


def worked_solution(problem: Problem, *, slip: int = 0) -> tuple[str, str]:
    """The teacher's reasoning steps and final answer for a synthetic problem.

    ``slip`` > 0 makes the teacher's one mistake (see :func:`math_steps`, :func:`code_steps`).
    """
    meta = problem.metadata
    if problem.kind is TaskKind.MATH:
        lines, value = math_steps(int(meta["a"]), int(meta["b"]), slip=slip)
        return lines, f"\\boxed{{{value}}}"
    lines, constant = code_steps(int(meta["a"]), int(meta["s"]), slip=slip)
    return lines, f"```python\ndef f(x):\n    return x + {constant}\n```"


def _corpus(seed: int) -> list[str]:
    """Text of the demo's domain: synthetic prompts and worked answers (not the held-out ones)."""
    texts: list[str] = ["user\n", "assistant\n"] * 50
    for kind in TaskKind:
        for problem in synthetic_problems(kind, 200, seed=seed + 1000):
            texts.append(DEMO_PROMPTS.render(problem)[-1].content)
            texts += worked_solution(problem)
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
    # One token per digit: numbers are read digit by digit, as column arithmetic needs.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer)
    return ChatTokenizer(tok, name="tracedistill-demo-bpe")


def _chitchat(renderer: ChatRenderer, n: int, rng: random.Random) -> list[str]:
    """Chat-formatted chit-chat: the chat structure, with the domain's words and numbers."""
    words = " ".join(_corpus(0)).replace("\\boxed", "").split()
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


def pretraining_problems(per_task: int = 256, *, seed: int = 0) -> list[Problem]:
    """The worked problems of the base student's pre-training, ``per_task`` of each task.

    Drawn apart from every problem the demo's runs use (teacher pools and held-out problems,
    every size), so the base student's skill is its own and no held-out problem is seen
    before evaluation.
    """
    used = {
        p.prompt
        for dims in DEMO_SIZES.values()
        for kind in TaskKind
        for p in synthetic_problems(kind, dims["pool"] + dims["eval"], seed=0)
    }
    out: list[Problem] = []
    for kind in TaskKind:
        drawn = synthetic_problems(kind, per_task + len(used), seed=seed + 2000)
        out += [p for p in drawn if p.prompt not in used][:per_task]
    return out


def _warmup_texts(renderer: ChatRenderer, per_task: int, seed: int) -> list[str]:
    """Pre-training texts of the base student: chit-chat and worked problems of both tasks."""
    from tracedistill.chat import thinking_completion

    texts = _chitchat(renderer, per_task, random.Random(seed))
    for problem in pretraining_problems(per_task, seed=seed):
        reasoning, answer = worked_solution(problem)
        assistant = Message("assistant", thinking_completion(reasoning, answer))
        texts.append(renderer.render_text([*DEMO_PROMPTS.render(problem), assistant]))
    return texts


def build_demo_student(directory: Path, *, warmup_steps: int = 0, seed: int = 0) -> Path:
    """Build the demo's tiny Qwen3 student (random weights, optionally pre-trained); blocking.

    The student has 2 layers of width 64 and the demo's small tokenizer (one token per digit).
    ``warmup_steps`` > 0 first trains all its weights (full-parameter, the embeddings too) on
    chat-formatted chit-chat and on worked problems of both tasks that none of the demo's runs
    uses: a base model with some skill in both tasks, as a pretrained base has. Distillation
    then trains it with LoRA of rank 64 on every linear layer, which at this width is as
    expressive as full fine-tuning of those layers.
    """
    from tracedistill.chat import ChatFormat, ChatRenderer
    from tracedistill.training.local import build_tiny_model, warm_up_full

    # The marker names the recipe, so a student built by an older demo is rebuilt, not reused.
    marker, recipe = directory / "warmed_up", f"{_STUDENT_RECIPE} {warmup_steps} {seed}\n"
    built = (directory / "config.json").is_file() and marker.is_file()
    if built and marker.read_text() == recipe:
        return directory
    tokenizer = demo_tokenizer(seed)
    # Untied output layer: LoRA adapts the output layer, and with tied weights that adapter
    # would change the logits but not the input embeddings they share (PEFT warns about it).
    build_tiny_model(
        directory,
        tokenizer=tokenizer,
        hidden_size=64,
        num_layers=2,
        tie_word_embeddings=False,
        seed=seed,
    )
    if warmup_steps > 0:
        renderer = ChatRenderer(tokenizer, ChatFormat.QWEN3)
        warm_up_full(
            directory,
            _warmup_texts(renderer, _WARMUP_PER_TASK, seed),
            tokenizer=tokenizer,
            steps=warmup_steps,
            batch_size=16,
            learning_rate=3e-3,
        )
    marker.write_text(recipe)
    return directory


def demo_train_config(student: Path, dims: dict[str, int]) -> TrainConfig:
    """The LoRA recipe of the demo's runs (full rank at the student's width)."""
    from tracedistill.training.base import TrainConfig

    return TrainConfig(
        base_model=str(student),
        lora_rank=64,
        batch_size=dims.get("batch", 32),
        learning_rate=2e-3,
        max_length=128,
        epochs=None,
        max_steps=dims["steps"],
        checkpoint_every=dims["every"],
    )


def _one_torch_thread() -> None:
    """On a machine with two cores or fewer, torch runs on one thread.

    Measured on a loaded 2-core machine: the tiny student's steps ran 6-8x faster on one thread
    than on torch's default two, which contend with the event loop and the code sandbox.
    """
    import torch

    if (os.cpu_count() or 1) <= 2:
        torch.set_num_threads(1)


def demo_sampler_factory(batch_size: int = 100) -> ExperimentSamplerFactory:
    """Evaluation samplers for the demo: local, greedy, ``batch_size`` prompts per ``generate``.

    The held-out set of a task goes through the tiny student in one batch (with the KV cache,
    stopping when every answer has ended) instead of the default batches of 8.
    """

    def factory(model: Any, run: Run | None) -> Sampler:
        from tracedistill.evaluation.samplers import make_sampler

        kwargs: dict[str, Any] = {"batch_size": batch_size}
        if run is not None:
            kwargs.update(chat_format=run.train.chat_format, base_model=run.train.base_model)
        return make_sampler(model, **kwargs)

    return factory


def _demo_runs(
    kind: TaskKind, pool: list[Problem], student: Path, dims: dict[str, int], *, ablation: bool
) -> list[Run]:
    """The run of one task, and with ``ablation`` its answer-only twin (same problems, budget)."""
    from tracedistill.experiment import Filters, Run

    teachers = [("", SyntheticTeacher())]
    if ablation:
        teachers.append(("-direct", SyntheticTeacher(name="synthetic-teacher-direct", steps=False)))
    return [
        Run(
            name=f"synthetic-{kind}{suffix}",
            task=kind,
            teacher=teacher,
            problems=pool,
            train=demo_train_config(student, dims),
            # Pool and held-out problems are distinct by construction, but every prompt of a
            # kind shares its template's wording, which 8-gram decontamination would flag.
            filters=Filters(decontaminate=False),
        )
        for suffix, teacher in teachers
    ]


async def run_demo(
    directory: str | Path = "runs/demo",
    *,
    size: str = "full",
    progress: bool | None = None,
    ablation: bool = False,
) -> Results:
    """Run the whole pipeline offline on synthetic problems and write the report.

    Two runs (math and code) with :class:`SyntheticTeacher`: generate, verify, keep the
    correct traces, LoRA-train a tiny Qwen3 student on the CPU, evaluate the base student and
    every checkpoint on held-out synthetic problems, and write ``report.md`` and
    ``report.html`` into ``directory``. With ``ablation``, two more runs
    (``synthetic-math-direct``, ``synthetic-code-direct``) train the same student on the same
    verified answers without their reasoning steps, with the same budget. Returns the results.
    """
    from tracedistill.evaluation.benchmarks import custom_benchmark
    from tracedistill.experiment import Experiment
    from tracedistill.training.local import LocalTrainer

    if size not in DEMO_SIZES:
        raise ValueError(f"size must be one of {sorted(DEMO_SIZES)}, got {size!r}")
    dims = DEMO_SIZES[size]
    _one_torch_thread()
    root = Path(directory)
    await anyio.Path(root).mkdir(parents=True, exist_ok=True)
    student = await anyio.to_thread.run_sync(
        lambda: build_demo_student(root / "student-base", warmup_steps=dims["warmup"])
    )
    runs: list[Run] = []
    benchmarks = []
    for kind in (TaskKind.MATH, TaskKind.CODE):
        problems = synthetic_problems(kind, dims["pool"] + dims["eval"], seed=0)
        pool, held_out = problems[: dims["pool"]], problems[dims["pool"] :]
        benchmarks.append(
            custom_benchmark(
                f"synthetic-{kind}",
                held_out,
                template=DEMO_PROMPTS.for_kind(kind),
                max_tokens=DEMO_MAX_TOKENS[kind],
            )
        )
        runs += _demo_runs(kind, pool, student, dims, ablation=ablation)
    experiment = Experiment(
        root,
        runs,
        trainer=LocalTrainer(device="cpu"),
        benchmarks=benchmarks,
        baseline=student,
        sampler_factory=demo_sampler_factory(dims["eval"]),
        progress=progress,
    )
    results = await experiment.run()
    (root / "report.md").write_text(results.to_markdown(), encoding="utf-8")
    # matplotlib is the optional `plot` extra: without it, the tables are still written.
    with contextlib.suppress(ImportError):
        results.to_html(root / "report.html", title="tracedistill demo")
    return results
