"""An API key planted in a run must never reach a record, a log line, a repr or an exception."""

from __future__ import annotations

import logging
import pickle
import traceback
from pathlib import Path

import pytest

from tests.servers.anthropic_server import AnthropicServer
from tests.servers.openai_server import Fault, OpenAIServer
from tracedistill import JsonlTraceStore
from tracedistill._secrets import Secret
from tracedistill.errors import AuthenticationError
from tracedistill.teachers import AnthropicTeacher, OpenAICompatTeacher, generate

from .conftest import FAST_RETRY, math_problems, openai_teacher

pytestmark = pytest.mark.anyio

PLANTED = "sk-or-v1-PLANTED-SECRET-5f4dcc3b5aa765d61d8327deb882cf99"


def all_text(path: Path) -> str:
    return "\n".join(p.read_text(errors="replace") for p in path.rglob("*") if p.is_file())


async def test_key_never_leaks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("OPENROUTER_API_KEY", PLANTED)
    outputs: list[str] = []
    with OpenAIServer(api_key="sk-some-other-key", fault_rate=0.0) as server:
        # the key comes from the environment, as users set it
        teacher = OpenAICompatTeacher.openrouter(
            "loop/model", base_url=server.url + "/v1", retry=FAST_RETRY, timeout=2.0
        )
        outputs += [repr(teacher), str(teacher.describe()), repr(teacher._api_key)]
        with JsonlTraceStore(tmp_path / "store") as store:
            with pytest.raises(AuthenticationError) as info:
                await generate(teacher, math_problems(5), store)
            # the server echoed the key in its 401 body: the error carries it redacted
            assert "****" in str(info.value)
            outputs += [
                str(info.value),
                repr(info.value),
                str(info.value.provider_message),
                "".join(traceback.format_exception(info.value)),
            ]
        await teacher.aclose()
        with pytest.raises(TypeError):
            pickle.dumps(teacher._api_key)
    # a run with faults (errors, retries, failed traces) against a server that takes the key
    with OpenAIServer(api_key=PLANTED) as server:
        teacher = openai_teacher(server, api_key=Secret(PLANTED, name="OPENROUTER_API_KEY"))
        problems = math_problems(6)
        server.script(problems[0].prompt, *[Fault.http(400, message=f"bad {PLANTED}")])
        server.script(problems[1].prompt, Fault.http(500), Fault.reset(), Fault.malformed())
        with JsonlTraceStore(tmp_path / "store2") as store:
            summary = await generate(teacher, problems, store)
            assert summary.failed == 1
            failed = [t for t in store.traces(include_failed=True) if not t.ok]
            assert "****" in (failed[0].error or "")
            outputs.append(str(summary))
        await teacher.aclose()
    with AnthropicServer(api_key="another") as server:
        claude = AnthropicTeacher("c", base_url=server.url, api_key=PLANTED, retry=FAST_RETRY)
        with (
            JsonlTraceStore(tmp_path / "store3") as store,
            pytest.raises(AuthenticationError) as err,
        ):
            await generate(claude, math_problems(2), store)
        outputs += [str(err.value), repr(claude)]
        await claude.aclose()
    outputs.append(all_text(tmp_path))
    outputs += [r.getMessage() for r in caplog.records]
    outputs.append(caplog.text)
    leaked = [o[:200] for o in outputs if PLANTED in o]
    assert not leaked
    # and the checks above did see real output
    assert any("invalid api key" in o for o in outputs)
