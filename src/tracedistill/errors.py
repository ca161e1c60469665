"""The exception hierarchy of tracedistill.

Every error the library raises on purpose derives from :class:`TraceDistillError`, so
``except TraceDistillError`` catches them all. Each message says what happened and what to do.
Secrets never appear in messages: errors are built from redacted values only.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "AuthenticationError",
    "BudgetExceededError",
    "CheckpointError",
    "ConfigurationError",
    "DatasetUnavailableError",
    "EvaluationError",
    "InsufficientCreditsError",
    "InvalidRequestError",
    "ModelNotAvailableError",
    "ProblemSourceError",
    "ProviderError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "RateLimitError",
    "RecordError",
    "SandboxError",
    "SchemaVersionError",
    "StoreCorruptError",
    "StoreError",
    "TeacherError",
    "TraceDistillError",
    "TrainingError",
    "UnknownProblemError",
    "VerifierError",
]


class TraceDistillError(Exception):
    """Base class of every error raised by tracedistill."""


class ConfigurationError(TraceDistillError, ValueError):
    """A configuration value is invalid; the message names the field and the allowed values."""


class RecordError(TraceDistillError, ValueError):
    """A record (problem, trace, verdict) could not be built from the given data."""


# --- store ---------------------------------------------------------------------------------


class StoreError(TraceDistillError):
    """A trace store could not be read or written."""


class StoreCorruptError(StoreError):
    """A store file holds a line that is not a valid record.

    Attributes:
        path: the file that holds the bad line.
        line: its 1-based line number.
    """

    def __init__(self, path: Path, line: int, problem: str) -> None:
        self.path = path
        self.line = line
        super().__init__(
            f"{path}:{line}: {problem}. Nothing was changed. Fix or delete this line by hand "
            f"(the records before and after it are intact), then open the store again."
        )


class SchemaVersionError(StoreError):
    """A stored record was written by a newer (or unknown) schema version of tracedistill."""

    def __init__(self, path: Path, line: int, found: object, supported: int) -> None:
        self.path = path
        self.line = line
        super().__init__(
            f"{path}:{line}: record has schema version {found!r}, this tracedistill reads "
            f"versions up to {supported}. Upgrade tracedistill to read this store; "
            f"nothing was changed."
        )


class UnknownProblemError(StoreError, KeyError):
    """A trace or verdict refers to a problem the store does not hold."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown problem"


# --- problems --------------------------------------------------------------------------------


class ProblemSourceError(TraceDistillError):
    """A problem source could not be read or holds rows that cannot become problems."""


class DatasetUnavailableError(ProblemSourceError):
    """A dataset could not be fetched (for example, the Hugging Face Hub is unreachable)."""


# --- teachers ------------------------------------------------------------------------------


class TeacherError(TraceDistillError):
    """A teacher could not produce a trace."""


class ProviderError(TeacherError):
    """A provider answered with an error.

    Attributes:
        status: the HTTP status (or the status carried in an HTTP 200 error body), if any.
        provider_message: the provider's own message, with any secret redacted.
        retryable: whether retrying the same request may succeed.
    """

    retryable: bool = False
    fatal: bool = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        provider_message: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.provider_message = provider_message
        self.retry_after = retry_after
        super().__init__(message)


class AuthenticationError(ProviderError):
    """The provider rejected the credentials (401/403): the whole run stops."""

    fatal = True


class InsufficientCreditsError(ProviderError):
    """The provider account is out of credits (402): the whole run stops."""

    fatal = True


class InvalidRequestError(ProviderError):
    """The provider rejected the request as invalid (400): never retried."""


class RateLimitError(ProviderError):
    """The provider is rate limiting (429): retried after a back-off."""

    retryable = True


class ProviderUnavailableError(ProviderError):
    """The provider failed or is overloaded (5xx, 529, connection errors): retried."""

    retryable = True


class ProviderTimeoutError(ProviderError):
    """The request took longer than its timeout (or the provider said 408): retried."""

    retryable = True


class BudgetExceededError(TeacherError):
    """Starting another request could push spend past the configured budget."""


# --- verifiers -----------------------------------------------------------------------------


class VerifierError(TraceDistillError):
    """A verifier could not run (as opposed to a trace failing verification)."""


class SandboxError(VerifierError):
    """The code sandbox could not be set up on this platform."""


# --- training ------------------------------------------------------------------------------


class TrainingError(TraceDistillError):
    """Training failed or could not start."""


class ModelNotAvailableError(TrainingError):
    """The requested base model is not served by the training backend."""


class CheckpointError(TrainingError):
    """A checkpoint could not be saved, found or loaded."""


# --- evaluation ----------------------------------------------------------------------------


class EvaluationError(TraceDistillError):
    """An evaluation could not run."""
