"""An Anthropic Messages API test server (``POST /v1/messages``).

Answers with thinking and text blocks, ``anthropic-ratelimit-*`` headers when asked, 529 for
overload faults, and Anthropic's error layout. See :mod:`tests.servers.base`.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.servers.base import Fault, Reply, ScriptedServer, default_responder, main, pieces, sse

__all__ = ["AnthropicServer", "Fault", "Reply", "default_responder"]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


class AnthropicServer(ScriptedServer):
    """Anthropic-compatible ``/v1/messages``."""

    path = "/v1/messages"
    flavour = "anthropic"

    def prompt_of(self, request: dict[str, Any]) -> str:
        text = super().prompt_of(request)
        system = request.get("system")
        return f"{system}\n{text}" if isinstance(system, str) and system else text

    def authorized(self, headers: dict[str, str]) -> bool:
        if "anthropic-version" not in headers:
            return False
        return self.api_key is None or headers.get("x-api-key") == self.api_key

    def received_key(self, headers: dict[str, str]) -> str:
        return headers.get("x-api-key", "")

    def success_body(self, request: dict[str, Any], reply: Reply, cost: float) -> dict[str, Any]:
        cap = self.max_tokens_of(request)
        output = max(1, (len(reply.reasoning) + len(reply.answer)) // 4)
        if reply.truncated:  # stopped at max_tokens: all of it was generated
            output = 64 if cap is None else cap
        content: list[dict[str, Any]] = []
        if request.get("thinking"):
            content.append({"type": "thinking", "thinking": reply.reasoning, "signature": "sig"})
            content.append({"type": "redacted_thinking", "data": "opaque"})
        content.append({"type": "text", "text": reply.answer})
        return {
            "id": "msg_loopback",
            "type": "message",
            "role": "assistant",
            "model": request.get("model", "unknown"),
            "content": content,
            "stop_reason": "max_tokens" if reply.truncated else "end_turn",
            "stop_sequence": None,
            "usage": {
                "input_tokens": max(1, len(self.prompt_of(request)) // 4),
                "output_tokens": output,
            },
        }

    # --- streaming (server-sent events) ----------------------------------------------------

    def stream_events(self, request: dict[str, Any], reply: Reply, cost: float) -> list[bytes]:
        """The Messages API event flow: ``message_start``, a ``ping``, each content block as
        ``content_block_start`` / deltas (``thinking_delta``, ``signature_delta``,
        ``text_delta``) / ``content_block_stop``, ``message_delta`` with the stop reason and
        cumulative usage, ``message_stop``.
        """
        whole = self.success_body(request, reply, cost)
        start = {**whole, "content": [], "stop_reason": None, "stop_sequence": None}
        start["usage"] = {"input_tokens": whole["usage"]["input_tokens"], "output_tokens": 1}
        events = [sse({"type": "message_start", "message": start}, "message_start")]
        events.append(sse({"type": "ping"}, "ping"))
        for index, block in enumerate(whole["content"]):
            kind = block["type"]
            empty = {"thinking": {"thinking": "", "signature": ""}, "text": {"text": ""}}
            opening = {"type": kind, **empty.get(kind, {k: v for k, v in block.items()})}
            events.append(
                sse(
                    {"type": "content_block_start", "index": index, "content_block": opening},
                    "content_block_start",
                )
            )
            deltas: list[dict[str, Any]] = []
            if kind == "thinking":
                deltas = [{"type": "thinking_delta", "thinking": p} for p in pieces(block[kind])]
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
            elif kind == "text":
                deltas = [{"type": "text_delta", "text": p} for p in pieces(block[kind])]
            for delta in deltas:
                events.append(
                    sse(
                        {"type": "content_block_delta", "index": index, "delta": delta},
                        "content_block_delta",
                    )
                )
            events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        events.append(
            sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": whole["stop_reason"], "stop_sequence": None},
                    "usage": {"output_tokens": whole["usage"]["output_tokens"]},
                },
                "message_delta",
            )
        )
        events.append(sse({"type": "message_stop"}, "message_stop"))
        return events

    def stream_error_event(self, status: int, message: str) -> bytes:
        return sse(self.error_body(status, message), "error")

    def keepalive_event(self) -> bytes:
        return sse({"type": "ping"}, "ping")

    # --- Message Batches ----------------------------------------------------------------------

    def route(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes] | None:
        prefix = "/v1/messages/batches"
        if method == "POST" and target == prefix:
            spec = json.loads(body)
            results = []
            counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
            for item in spec["requests"]:
                status, answer = self.batch_answer(item["params"])
                if status == 200:
                    result = {"type": "succeeded", "message": answer}
                    counts["succeeded"] += 1
                else:
                    result = {"type": "errored", "error": answer}
                    counts["errored"] += 1
                results.append(json.dumps({"custom_id": item["custom_id"], "result": result}))
            batch_id = self.new_id("msgbatch_")
            self.stats.batches += 1
            self._objects[batch_id] = {
                "polls": self.batch_polls,
                "counts": counts,
                "results": ("\n".join(results) + "\n").encode(),
            }
            return 200, json.dumps(self._public_batch(batch_id, poll=False)).encode()
        if method == "GET" and target.startswith(prefix + "/") and target.endswith("/results"):
            batch_id = target[len(prefix) + 1 :].split("/")[0]
            return 200, self._objects[batch_id]["results"]
        if method == "GET" and target.startswith(prefix + "/"):
            batch_id = target[len(prefix) + 1 :]
            if batch_id not in self._objects:
                return 404, json.dumps(self.error_body(404, "no such batch")).encode()
            return 200, json.dumps(self._public_batch(batch_id, poll=True)).encode()
        return None

    def _public_batch(self, batch_id: str, *, poll: bool) -> dict[str, Any]:
        batch = self._objects[batch_id]
        ended = poll and batch["polls"] <= 0
        if poll and batch["polls"] > 0:
            batch["polls"] -= 1
        return {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": batch["counts"],
            "results_url": f"{self.url}/v1/messages/batches/{batch_id}/results" if ended else None,
        }

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {
            "type": "error",
            "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message},
        }

    def limit_headers(self, remaining: float, reset: float) -> dict[str, str]:
        if self.rpm is None:
            return {}
        at = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=reset)
        return {
            "anthropic-ratelimit-requests-limit": f"{self.rpm:g}",
            "anthropic-ratelimit-requests-remaining": str(int(remaining)),
            "anthropic-ratelimit-requests-reset": at.isoformat().replace("+00:00", "Z"),
        }


if __name__ == "__main__":
    main(AnthropicServer)
