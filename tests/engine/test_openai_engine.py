"""``OpenAIEndpointEngine`` and ``k15 eval --endpoint`` against a tiny in-process HTTP stub.

The stub (``http.server`` on port 0 in a thread) implements ``GET /v1/models`` and
``POST /v1/completions`` deterministically from the request — choice ``i`` of a prompt is
``stub_ids(prompt, i, max_tokens)`` — after a random short sleep (so answers arrive out of
order), lists its choices in reverse ``index`` order, and answers ``max_tokens > 50`` with
a 400 JSON error as vLLM does. It records every request body. No vLLM, no Ray.
"""

from __future__ import annotations

import json
import math
import random
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from rllib_k15.engine.base import SamplingParams, encode_chat
from rllib_k15.engine.openai_engine import OpenAIEndpointEngine

pytest.importorskip("openai")

MAX_TOKENS_LIMIT = 50
VOCAB = 49152  # the SmolLM2 tokenizer of tiny-random-llama


def stub_ids(prompt: list[int], index: int, max_tokens: int) -> list[int]:
    """Choice ``index``'s tokens: the prompt reversed, shifted by ``index``, capped."""
    return [(t + index) % VOCAB for t in reversed(prompt)][:max_tokens]


class StubState:
    """What the stub serves and what it saw."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.models = ["stub-model", "other-model"]
        self.send_token_ids = True
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.max_in_flight = 0
        self.models = ["stub-model", "other-model"]
        self.send_token_ids = True

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """The ``/v1/completions`` answer for ``body``."""
        prompt, max_tokens = [int(t) for t in body["prompt"]], int(body["max_tokens"])
        choices = []
        for i in range(int(body.get("n", 1))):
            ids = stub_ids(prompt, i, max_tokens)
            choice: dict[str, Any] = {
                "index": i,
                "text": self.tokenizer.decode(ids, skip_special_tokens=True),
                "logprobs": {"token_logprobs": [-0.5] * len(ids), "tokens": ["?"] * len(ids)},
                "finish_reason": "length" if len(ids) == max_tokens else "stop",
            }
            if self.send_token_ids and body.get("return_token_ids"):
                choice |= {"token_ids": ids, "prompt_token_ids": prompt}
            choices.append(choice)
        return {
            "id": "cmpl-stub",
            "object": "text_completion",
            "created": 0,
            "model": body["model"],
            "choices": choices[::-1],  # out of index order on purpose
        }


class StubHandler(BaseHTTPRequestHandler):
    """Routes the two endpoints to the server's ``StubState``."""

    def log_message(self, *args: Any) -> None:  # keep the test output clean
        pass

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        state: StubState = self.server.state  # type: ignore[attr-defined]
        if self.path != "/v1/models":
            return self._send(404, {"error": {"message": f"no route {self.path}", "code": 404}})
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "k15"} for m in state.models]
        self._send(200, {"object": "list", "data": data})

    def do_POST(self) -> None:  # noqa: N802
        state: StubState = self.server.state  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with state.lock:
            state.requests.append(body)
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        try:
            time.sleep(random.uniform(0.005, 0.03))
            if body["max_tokens"] > MAX_TOKENS_LIMIT:
                message = f"max_tokens ({body['max_tokens']}) exceeds the stub's {MAX_TOKENS_LIMIT}"
                error = {"message": message, "type": "BadRequestError", "param": None, "code": 400}
                return self._send(400, {"error": error})
            self._send(200, state.completion(body))
        finally:
            with state.lock:
                state.in_flight -= 1


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path) -> Any:
    from rllib_k15.models import load_tokenizer

    return load_tokenizer(tiny_model_dir)


@pytest.fixture(scope="module")
def stub_server(tokenizer: Any) -> Iterator[tuple[str, StubState]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubHandler)
    server.daemon_threads = True
    server.state = StubState(tokenizer)  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1", server.state  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


@pytest.fixture
def stub(stub_server: tuple[str, StubState]) -> tuple[str, StubState]:
    stub_server[1].reset()
    return stub_server


@pytest.fixture(scope="module")
def engine(stub_server: tuple[str, StubState], tiny_model_dir: Path) -> Iterator[Any]:
    url, _ = stub_server
    eng = OpenAIEndpointEngine(url, tokenizer_model=tiny_model_dir, concurrency=4, max_retries=0)
    yield eng
    eng.close()


def test_order_kept_under_concurrency(engine: Any, stub: tuple[str, StubState]) -> None:
    _, state = stub
    prompts = [engine.encode_prompt(f"problem number {k}: {k} + {k}?") for k in range(20)]
    groups = engine.generate(prompts, SamplingParams(n=3, max_tokens=12))
    assert len(groups) == 20 and len(state.requests) == 20
    for prompt, group in zip(prompts, groups):
        assert [c.token_ids for c in group] == [stub_ids(prompt, i, 12) for i in range(3)]
        for c in group:
            assert c.logprobs == [-0.5] * len(c.token_ids) and c.finish_reason == "length"
    assert 1 < state.max_in_flight <= 4  # concurrent, but never more than `concurrency`


def test_request_carries_the_chat_templated_ids(
    engine: Any, stub: tuple[str, StubState], tokenizer: Any
) -> None:
    _, state = stub
    engine.generate_text(
        ["What is 2 + 3?"], SamplingParams(temperature=0.7, top_p=0.9, max_tokens=7)
    )
    (body,) = state.requests
    assert body["prompt"] == encode_chat(tokenizer, "What is 2 + 3?")
    assert body["model"] == "stub-model" and body["return_token_ids"] is True
    assert body["logprobs"] == 0 and body["n"] == 1 and body["max_tokens"] == 7
    assert body["temperature"] == 0.7 and body["top_p"] == 0.9 and "stop" not in body


def test_stop_strings_and_finish_stop(engine: Any, stub: tuple[str, StubState]) -> None:
    _, state = stub
    (group,) = engine.generate([[11, 12, 13]], SamplingParams(max_tokens=5, stop=("\n",)))
    assert group[0].token_ids == [13, 12, 11] and group[0].finish_reason == "stop"
    assert state.requests[0]["stop"] == ["\n"]


def test_greedy_n_copies_one_choice(engine: Any, stub: tuple[str, StubState]) -> None:
    _, state = stub
    groups = engine.generate([[5, 6, 7], [8, 9]], SamplingParams(n=3, temperature=0, max_tokens=4))
    assert len(state.requests) == 2 and all(r["n"] == 1 for r in state.requests)
    for prompt, group in zip([[5, 6, 7], [8, 9]], groups):
        assert [c.token_ids for c in group] == [stub_ids(prompt, 0, 4)] * 3
        assert len({id(c) for c in group}) == 3  # distinct objects


def test_no_seed_is_ever_sent(engine: Any, stub: tuple[str, StubState]) -> None:
    _, state = stub
    for n, temperature in ((1, 1.0), (2, 0.0), (4, 0.5)):
        params = SamplingParams(n=n, temperature=temperature, max_tokens=3)
        engine.generate([[1, 2, 3]], params)
    assert len(state.requests) == 3 and not any("seed" in r for r in state.requests)
    assert not hasattr(engine, "reseed")


def test_missing_token_ids_fall_back_to_the_text(
    engine: Any, stub: tuple[str, StubState], tokenizer: Any
) -> None:
    _, state = stub
    state.send_token_ids = False
    prompt = engine.encode_prompt("Name a colour.")
    (group,) = engine.generate([prompt], SamplingParams(n=2, max_tokens=10))
    for i, c in enumerate(group):
        assert c.text == tokenizer.decode(stub_ids(prompt, i, 10), skip_special_tokens=True)
        assert c.token_ids == tokenizer.encode(c.text, add_special_tokens=False)
        # log-probs are kept only when they match the tokens one to one, else NaN
        if len(c.token_ids) == 10:
            assert c.logprobs == [-0.5] * 10
        else:
            assert len(c.logprobs) == len(c.token_ids) and all(math.isnan(x) for x in c.logprobs)


def test_model_auto_picked_and_explicit(stub: tuple[str, StubState], tiny_model_dir: Path) -> None:
    url, state = stub
    state.models = ["first-model", "second-model"]
    with OpenAIEndpointEngine(url, tokenizer_model=tiny_model_dir, max_retries=0) as eng:
        assert eng.model == "first-model"
        eng.generate([[1, 2]], SamplingParams(max_tokens=2))
    with OpenAIEndpointEngine(
        url, tokenizer_model=tiny_model_dir, model="second-model", max_retries=0
    ) as eng:
        eng.generate([[1, 2]], SamplingParams(max_tokens=2))
    assert [r["model"] for r in state.requests] == ["first-model", "second-model"]


def test_no_model_listed_or_unreachable_names_the_url(
    stub: tuple[str, StubState], tiny_model_dir: Path
) -> None:
    url, state = stub
    state.models = []
    with pytest.raises(RuntimeError, match=f"{url}/models lists no model"):
        OpenAIEndpointEngine(url, tokenizer_model=tiny_model_dir, max_retries=0)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with pytest.raises(RuntimeError, match=f"cannot reach {dead}/models"):
        OpenAIEndpointEngine(dead, tokenizer_model=tiny_model_dir, max_retries=0)


def test_server_error_surfaces_with_its_message(engine: Any, stub: tuple[str, StubState]) -> None:
    url, _ = stub
    with pytest.raises(RuntimeError, match="exceeds the stub's 50") as err:
        engine.generate([[1, 2, 3], [4, 5]], SamplingParams(max_tokens=MAX_TOKENS_LIMIT + 1))
    assert f"{url}/completions answered HTTP 400" in str(err.value)


def test_load_weights_is_the_servers(engine: Any) -> None:
    with pytest.raises(NotImplementedError, match="k15 serve --watch"):
        engine.load_weights({})


def test_close_is_idempotent(stub: tuple[str, StubState], tiny_model_dir: Path) -> None:
    url, _ = stub
    eng = OpenAIEndpointEngine(url, tokenizer_model=tiny_model_dir, max_retries=0)
    eng.close()
    eng.close()
    with pytest.raises(RuntimeError, match="closed"):
        eng.generate([[1]], SamplingParams())
    with pytest.raises(ValueError, match="concurrency"):
        OpenAIEndpointEngine(url, tokenizer_model=tiny_model_dir, concurrency=0)


def test_evaluate_end_to_end(engine: Any, stub: tuple[str, StubState]) -> None:
    pytest.importorskip("k15_envs")
    from rllib_k15.env_factory import make_unwrapped_env
    from rllib_k15.evaluation.evaluate import evaluate

    _, state = stub
    env = make_unwrapped_env("k15/Arithmetic-v0", {"difficulty": 1})
    try:
        result = evaluate(
            engine, env, num_problems=5, samples=2, max_tokens=8, seed=3, batch_problems=2,
            progress=False,
        )  # fmt: skip
    finally:
        env.close()
    assert result.num_problems == 5 and result.samples == 2
    assert len(state.requests) == 5 and not any("seed" in r for r in state.requests)
    assert result.generated_tokens == 5 * 2 * 8 and result.truncated_fraction == 1.0
    assert sum(result.reasons.values()) == 10


def test_eval_command_parses_endpoint() -> None:
    from rllib_k15.commands.k15 import build_parser

    args = build_parser().parse_args(
        ["eval", "--endpoint", "http://x/v1", "--served-model", "k15", "--model", "tok"]
    )
    assert args.endpoint == "http://x/v1" and args.served_model == "k15" and args.model == "tok"
    assert build_parser().parse_args(["eval"]).endpoint is None


def test_eval_command_over_the_endpoint(
    stub: tuple[str, StubState], tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    pytest.importorskip("k15_envs")
    from rllib_k15.commands.k15 import main

    url, state = stub
    out = tmp_path / "eval.jsonl"
    argv = ["eval", "--endpoint", url, "--model", str(tiny_model_dir), "--problems", "2",
            "--samples", "2", "--max-tokens", "4", "--out", str(out), "--no-plot"]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[0] == "precision: the endpoint's (server-side)"
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["label"] == "stub-model" and row["engine"] == "endpoint"
    assert row["endpoint"] == url and row["served_model"] == "stub-model"
    assert row["num_problems"] == 2 and len(state.requests) == 2
    (record,) = [json.loads(line) for line in (tmp_path / "eval.precision.jsonl").open()]
    assert record["engine"] == "endpoint" and record["precision"]["dtype"] == "server-side"
