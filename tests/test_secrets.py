"""Secret.redact: a key never shows in a message, and a short key does not mangle the words.

The end-to-end check (a key planted in a run never reaches a record, log, repr, exception or
report) is ``tests/teachers/test_secrets.py``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from tests.servers.openai_server import OpenAIServer
from tests.teachers.conftest import FAST_RETRY, math_problems
from tracedistill import JsonlTraceStore, OpenAICompatTeacher
from tracedistill._secrets import WHOLE_WORD_BELOW, Secret
from tracedistill.errors import AuthenticationError
from tracedistill.teachers import generate

#: Shapes of the providers' keys (random parts made up).
OPENROUTER = "sk-or-v1-" + "5f4dcc3b5aa765d61d8327deb882cf99" * 2
ANTHROPIC = "sk-ant-api03-" + "Zx9_Qw-" * 13 + "AA"
OPENAI = "sk-proj-" + "aB3dE6gH9jK2mN5pQ8sT1vW4yZ7" * 2


@pytest.mark.parametrize(
    ("key", "text", "expected"),
    [
        # a one-letter key inside ordinary words stays out of them
        ("k", "unknown key: k", "unknown key: ****"),
        (
            "k",
            "Incorrect API key provided: k. Check the key.",
            "Incorrect API key provided: ****. Check the key.",
        ),
        ("k", "top-k and top_k sampling", "top-k and top_k sampling"),
        ("k", "Authorization: Bearer k", "Authorization: Bearer ****"),
        ("k", '{"api_key": "k", "kind": "k"}', '{"api_key": "****", "kind": "****"}'),
        ("k", "k", "****"),
        (
            "sk",
            "task failed: invalid key 'sk' (ask again)",
            "task failed: invalid key '****' (ask again)",
        ),
        ("sk", "sk-or-v1 keys look like sk-or-v1-...", "sk-or-v1 keys look like sk-or-v1-..."),
        ("sk", "x-api-key=sk&retry=1", "x-api-key=****&retry=1"),
        (
            "hunter2",
            "password hunter2 rejected; hunter22 is not it",
            "password **** rejected; hunter22 is not it",
        ),
    ],
)
def test_a_short_key_is_redacted_as_a_whole_token(key: str, text: str, expected: str) -> None:
    assert len(key) < WHOLE_WORD_BELOW
    assert Secret(key).redact(text) == expected


@pytest.mark.parametrize("key", [OPENROUTER, ANTHROPIC, OPENAI])
@pytest.mark.parametrize(
    "template",
    [
        "Incorrect API key provided: {k}. You can find your API key at https://example.com.",
        '{{"error": {{"message": "invalid x-api-key", "key": "{k}"}}}}',
        "Authorization: Bearer {k}",
        "Bearer{k}",  # glued onto a word: a long key is still the key
        "{k}{k} and again {k}",
    ],
)
def test_a_provider_key_is_redacted_wherever_it_occurs(key: str, template: str) -> None:
    assert len(key) >= WHOLE_WORD_BELOW
    text = template.format(k=key)
    redacted = Secret(key).redact(text)
    assert key not in redacted
    assert redacted.count("****") == text.count(key)
    assert redacted == text.replace(key, "****")


def test_text_without_the_key_is_returned_as_is() -> None:
    text = "nothing to hide here"
    assert Secret("k").redact(text) is text
    assert Secret(OPENROUTER).redact(text) is text


def test_no_form_of_a_short_key_shows_it() -> None:
    secret = Secret("sk", name="OPENAI_API_KEY")
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}"):
        assert "sk" not in shown.replace("Secret", "").replace("OPENAI_API_KEY", "")
    with pytest.raises(TypeError):
        pickle.dumps(secret)


@pytest.mark.anyio
@pytest.mark.parametrize("key", ["k", "sk", OPENROUTER])
async def test_an_echoed_key_is_redacted_and_the_message_stays_readable(
    key: str, tmp_path: Path
) -> None:
    # The loopback server answers 401 "invalid api key: <the key sent>", as some providers do.
    with OpenAIServer(api_key="the-right-key") as server:
        teacher = OpenAICompatTeacher(
            "loop/model", base_url=server.url + "/v1", api_key=key, retry=FAST_RETRY, timeout=5.0
        )
        with (
            JsonlTraceStore(tmp_path / "store") as store,
            pytest.raises(AuthenticationError) as err,
        ):
            await generate(teacher, math_problems(1), store)
        await teacher.aclose()
    shown = [str(err.value), repr(err.value), str(err.value.provider_message)]
    assert all("invalid api key: ****" in text for text in shown), shown
