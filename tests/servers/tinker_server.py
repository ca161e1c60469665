"""A Tinker-compatible server on 127.0.0.1 for tests and benchmarks (SkyRL's Tinker API, JAX).

Two roles in one file:

- Run by the server venv's Python (``python tinker_server.py api ...`` / ``... engine ...``), it
  applies three small runtime shims to skyrl 0.4.0 and starts its API server or engine:
  1. ``typing.TypedDict`` inside pydantic models needs ``typing_extensions.TypedDict`` on
     Python 3.11;
  2. the API server launches its engine through ``uv run``: launch it with this venv's Python
     (through this file, so the engine gets the shims too);
  3. tinker 0.38 expects one ``sample_sequence_ids`` entry per sample in ``asample``'s answer:
     add them.
- Imported by tests (only the standard library at module level), :class:`TinkerServer` starts
  that server on a free loopback port and stops it with its engine.

The server venv is made by ``tests/servers/setup_tinker_server.sh``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
SETUP_SCRIPT = HERE.parent / "setup_tinker_server.sh"
API_KEY = "tml-tracedistill-test-key"  # the server only checks the prefix


def default_venv() -> Path:
    """Where setup_tinker_server.sh puts the server venv."""
    if os.environ.get("TRACEDISTILL_SKYRL_VENV"):
        return Path(os.environ["TRACEDISTILL_SKYRL_VENV"])
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "tracedistill" / "skyrl-venv"


def venv_ready(venv: Path | None = None) -> bool:
    """Whether the server venv exists and finished installing."""
    venv = venv or default_venv()
    return (venv / ".tracedistill-skyrl-v1").is_file() and (venv / "bin" / "python").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerStartError(RuntimeError):
    """The server did not come up; the message holds the end of its log."""


class TinkerServer:
    """A SkyRL Tinker API server (JAX backend, CPU) serving one local model on loopback.

    Use as a context manager; ``base_url`` and ``api_key`` are what a tinker client needs.
    ``max_lora_adapters=N`` allows N-1 live training clients.
    """

    def __init__(
        self,
        base_model: str | Path,
        workdir: str | Path,
        *,
        venv: Path | None = None,
        max_lora_adapters: int = 4,
        max_lora_rank: int = 32,
        start_timeout: float = 180.0,
    ) -> None:
        self.base_model = str(base_model)
        self.workdir = Path(workdir)
        self.venv = venv or default_venv()
        self.max_lora_adapters = max_lora_adapters
        self.max_lora_rank = max_lora_rank
        self.start_timeout = start_timeout
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api_key = API_KEY
        self.log_path = self.workdir / "server.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server and wait until it answers (raises ServerStartError otherwise)."""
        if not venv_ready(self.venv):
            raise ServerStartError(f"no server venv at {self.venv}: run bash {SETUP_SCRIPT} first")
        self.workdir.mkdir(parents=True, exist_ok=True)
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        env = dict(os.environ)
        env.update(
            {
                # Each new shape compiles for seconds: keep compiled programs across runs.
                "JAX_COMPILATION_CACHE_DIR": str(cache / "tracedistill" / "jax-cache"),
                "JAX_PLATFORMS": "cpu",
                "TOKENIZERS_PARALLELISM": "false",
                "HF_HUB_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.pop("SKYRL_DATABASE_URL", None)
        cmd = [
            str(self.venv / "bin" / "python"),
            str(HERE),
            "api",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--backend",
            "jax",
            "--base-model",
            self.base_model,
            "--database-url",
            f"sqlite:///{self.workdir / 'tinker.db'}",
            "--checkpoints-base",
            str(self.workdir / "checkpoints"),
            "--external-inference-lora-base",
            str(self.workdir / "lora"),
            "--backend-config",
            json.dumps(
                {"max_lora_adapters": self.max_lora_adapters, "max_lora_rank": self.max_lora_rank}
            ),
        ]
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise ServerStartError(
                    f"the server exited with {self._proc.returncode}:\n{self.log_tail()}"
                )
            if self._healthy():
                return
            time.sleep(0.5)
        self.stop()
        raise ServerStartError(
            f"the server did not answer within {self.start_timeout:.0f}s:\n{self.log_tail()}"
        )

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"{self.base_url}/api/v1/get_server_capabilities", timeout=2
            ) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's log."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Stop the server and its engine (the whole process group)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)

    def __enter__(self) -> TinkerServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def tinker_server(base_model: str | Path, workdir: str | Path, **kw: Any) -> Iterator[TinkerServer]:
    """Start a :class:`TinkerServer` for the duration of a ``with`` block."""
    server = TinkerServer(base_model, workdir, **kw)
    server.start()
    try:
        yield server
    finally:
        server.stop()


# --- run inside the server venv --------------------------------------------------------------


def _apply_shims() -> None:
    import typing

    import typing_extensions

    # 1. pydantic refuses typing.TypedDict on Python < 3.12.
    typing.TypedDict = typing_extensions.TypedDict  # type: ignore[misc]


def _run_engine(argv: list[str]) -> None:
    _apply_shims()
    from skyrl.tinker import engine

    sys.argv = ["skyrl.tinker.engine", *argv]
    engine.main()


def _run_api(argv: list[str]) -> None:
    _apply_shims()
    import argparse

    import uvicorn
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from skyrl.tinker import api
    from skyrl.tinker.config import EngineConfig, add_model, config_to_argv

    # 2. Launch the engine with this interpreter (and these shims), not through `uv run`.
    def engine_cmd(_parent_cmd: list[str], engine_config: Any) -> list[str]:
        return [sys.executable, str(HERE), "engine", *config_to_argv(engine_config)]

    api._build_uv_run_cmd_engine = engine_cmd

    # 3. tinker 0.38 wants one sequence id per requested sample in asample's promise.
    @api.app.middleware("http")
    async def add_sample_sequence_ids(request: Request, call_next: Any) -> Any:
        if request.url.path != "/api/v1/asample":
            return await call_next(request)
        body = await request.body()
        try:
            n = int(json.loads(body).get("num_samples", 1))
        except (ValueError, TypeError, AttributeError):
            n = 1
        response = await call_next(request)
        raw = b"".join([chunk async for chunk in response.body_iterator])
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if response.status_code != 200 or not isinstance(data, dict):
            return JSONResponse(data, status_code=response.status_code)
        rid = data.get("request_id", "0")
        data.setdefault("sample_sequence_ids", [f"{rid}-{i}" for i in range(n)])
        return JSONResponse(data, status_code=200)

    parser = argparse.ArgumentParser(description="SkyRL tinker API server (tracedistill shims)")
    add_model(parser, EngineConfig)
    parser.add_argument("--host", type=str, default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    fields = {k: v for k, v in vars(args).items() if k in EngineConfig.model_fields}
    api.app.state.engine_config = EngineConfig.model_validate(fields)
    uvicorn.run(api.app, host=args.host, port=args.port, log_level="warning")


def main() -> None:
    """Entry point inside the server venv: ``api ARGS`` or ``engine ARGS``."""
    if len(sys.argv) < 2 or sys.argv[1] not in ("api", "engine"):
        sys.exit(f"usage: {sys.argv[0]} api|engine ARGS")
    role, argv = sys.argv[1], sys.argv[2:]
    if role == "api":
        _run_api(argv)
    else:
        _run_engine(argv)


if __name__ == "__main__":
    main()
