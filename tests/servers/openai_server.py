"""An OpenAI-compatible (OpenRouter-flavoured) chat-completions test server.

Answers ``POST /v1/chat/completions`` with OpenRouter's layout: ``message.reasoning``,
``reasoning_details``, ``usage.cost``; or, with ``inline_think=True``, vLLM's layout (reasoning
inlined as a ``<think>`` block in the content). See :mod:`tests.servers.base` for scripting,
faults and rate limits. Run ``python tests/servers/openai_server.py --help``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.servers.base import Fault, Reply, ScriptedServer, default_responder, main, pieces, sse

__all__ = ["Fault", "OpenAIServer", "Reply", "default_responder"]


class OpenAIServer(ScriptedServer):
    """OpenAI-compatible ``/v1/chat/completions``."""

    path = "/v1/chat/completions"
    flavour = "openai"

    def __init__(
        self,
        *,
        inline_think: bool = False,
        report_cost: bool = True,
        reasoning_field: str = "reasoning",
        processing_comments: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.inline_think = inline_think
        self.report_cost = report_cost
        #: ``reasoning`` (OpenRouter) or ``reasoning_content`` (vLLM, SGLang, DeepSeek)
        self.reasoning_field = reasoning_field
        #: open each stream with OpenRouter's ``: OPENROUTER PROCESSING`` comment
        self.processing_comments = processing_comments

    def authorized(self, headers: dict[str, str]) -> bool:
        return self.api_key is None or headers.get("authorization") == f"Bearer {self.api_key}"

    def success_body(self, request: dict[str, Any], reply: Reply, cost: float) -> dict[str, Any]:
        cap = self.max_tokens_of(request)
        prompt_tokens = max(1, len(self.prompt_of(request)) // 4)
        reasoning_tokens = max(1, len(reply.reasoning) // 4)
        completion = reasoning_tokens + max(1, len(reply.answer) // 4)
        if reply.truncated:  # stopped at max_tokens: all of it was generated
            completion = 64 if cap is None else cap
        elif cap is not None and self.honour_max_tokens:
            completion = min(completion, cap)  # what was returned fits the cap
        reasoning_tokens = min(reasoning_tokens, completion)
        message: dict[str, Any] = {"role": "assistant"}
        if self.inline_think:
            message["content"] = f"<think>\n{reply.reasoning}\n</think>\n\n{reply.answer}"
        else:
            message["content"] = reply.answer
            message[self.reasoning_field] = reply.reasoning
            if self.reasoning_field == "reasoning":
                message["reasoning_details"] = [
                    {"type": "reasoning.text", "text": reply.reasoning, "format": "unknown"}
                ]
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
            "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
        }
        if self.report_cost:
            usage["cost"] = cost
        return {
            "id": f"gen-{time.monotonic_ns()}",
            "object": "chat.completion",
            "model": request.get("model", "unknown"),
            "provider": "Loopback",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "length" if reply.truncated else "stop",
                    "native_finish_reason": "length" if reply.truncated else "stop",
                }
            ],
            "usage": usage,
        }

    # --- streaming (server-sent events) ----------------------------------------------------

    def stream_events(self, request: dict[str, Any], reply: Reply, cost: float) -> list[bytes]:
        """``chat.completion.chunk`` events as OpenRouter sends them: a processing comment, a
        role chunk, reasoning deltas (``reasoning`` plus ``reasoning_details``), content
        deltas, a finish chunk, the usage chunk (``stream_options.include_usage``), ``[DONE]``.
        """
        whole = self.success_body(request, reply, cost)
        choice = whole["choices"][0]
        message = choice["message"]
        head = {k: whole[k] for k in ("id", "model", "provider")}
        head["object"] = "chat.completion.chunk"

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            body = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
            if finish is not None:
                body["choices"][0]["native_finish_reason"] = choice["native_finish_reason"]
            return sse(body)

        events = [b": OPENROUTER PROCESSING\n\n"] if self.processing_comments else []
        events.append(chunk({"role": "assistant", "content": ""}))
        for piece in pieces(message.get(self.reasoning_field) or ""):
            delta: dict[str, Any] = {"content": "", self.reasoning_field: piece}
            if "reasoning_details" in message:
                delta["reasoning_details"] = [
                    {"type": "reasoning.text", "text": piece, "format": "unknown", "index": 0}
                ]
            events.append(chunk(delta))
        for piece in pieces(message["content"]):
            events.append(chunk({"content": piece}))
        events.append(chunk({}, choice["finish_reason"]))
        if (request.get("stream_options") or {}).get("include_usage"):
            events.append(sse({**head, "choices": [], "usage": whole["usage"]}))
        events.append(sse("[DONE]"))
        return events

    def stream_error_event(self, status: int, message: str) -> bytes:
        """OpenRouter's mid-stream error: an error object plus ``finish_reason: "error"``."""
        return sse(
            {
                "id": "gen-error",
                "object": "chat.completion.chunk",
                "provider": "Loopback",
                "error": {"code": status, "message": message},
                "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
            }
        )

    def keepalive_event(self) -> bytes:
        return b": OPENROUTER PROCESSING\n\n"

    # --- the Batch API ----------------------------------------------------------------------

    def route(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes] | None:
        if method == "POST" and target == "/v1/files":
            content = _multipart_file(headers.get("content-type", ""), body)
            file_id = self.new_id("file-")
            self._objects[file_id] = content
            return 200, json.dumps({"id": file_id, "object": "file", "purpose": "batch"}).encode()
        if method == "POST" and target == "/v1/batches":
            spec = json.loads(body)
            lines = self._objects[spec["input_file_id"]].splitlines()
            output, errors = [], []
            for line in lines:
                item = json.loads(line)
                status, answer = self.batch_answer(item["body"])
                record = {
                    "id": self.new_id("batch_req_"),
                    "custom_id": item["custom_id"],
                    "response": {"status_code": status, "request_id": "r", "body": answer},
                    "error": None,
                }
                (output if status == 200 else errors).append(json.dumps(record))
            batch_id = self.new_id("batch_")
            out_id, err_id = self.new_id("file-"), self.new_id("file-")
            self._objects[out_id] = ("\n".join(output) + "\n").encode() if output else b""
            self._objects[err_id] = ("\n".join(errors) + "\n").encode() if errors else b""
            self.stats.batches += 1
            self._objects[batch_id] = {
                "id": batch_id,
                "object": "batch",
                "endpoint": spec["endpoint"],
                "status": "validating",
                "polls": self.batch_polls,
                "output_file_id": out_id if output else None,
                "error_file_id": err_id if errors else None,
                "request_counts": {
                    "total": len(lines),
                    "completed": len(output),
                    "failed": len(errors),
                },
            }
            return 200, json.dumps(self._public_batch(batch_id, poll=False)).encode()
        if method == "GET" and target.startswith("/v1/batches/"):
            batch_id = target.rsplit("/", 1)[1]
            if batch_id not in self._objects:
                return 404, json.dumps(self.error_body(404, "no such batch")).encode()
            return 200, json.dumps(self._public_batch(batch_id, poll=True)).encode()
        if method == "GET" and target.startswith("/v1/files/") and target.endswith("/content"):
            file_id = target.split("/")[3]
            return 200, self._objects[file_id]
        return None

    def _public_batch(self, batch_id: str, *, poll: bool) -> dict[str, Any]:
        batch = self._objects[batch_id]
        if poll:
            if batch["polls"] > 0:
                batch["polls"] -= 1
                batch["status"] = "in_progress"
            else:
                batch["status"] = "completed"
        view = {k: v for k, v in batch.items() if k != "polls"}
        if batch["status"] != "completed":
            view["output_file_id"] = view["error_file_id"] = None
        return view

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"error": {"code": status, "message": message, "metadata": {}}}

    def limit_headers(self, remaining: float, reset: float) -> dict[str, str]:
        if self.rpm is None:
            return {}
        return {
            "x-ratelimit-limit-requests": f"{self.rpm:g}",
            "x-ratelimit-remaining-requests": str(int(remaining)),
            "x-ratelimit-reset-requests": f"{reset * 1000:.0f}ms",
        }


def _multipart_file(content_type: str, body: bytes) -> bytes:
    """The bytes of the part named "file" in a multipart/form-data body."""
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
    for part in body.split(b"--" + boundary):
        head, _, content = part.partition(b"\r\n\r\n")
        if b'name="file"' in head:
            return content.removesuffix(b"\r\n")
    raise ValueError("no file part")


if __name__ == "__main__":
    main(OpenAIServer)
