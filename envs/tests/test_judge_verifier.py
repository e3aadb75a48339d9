"""``JudgeVerifier`` through the real ``openai`` client against a scripted local server.

The server (``http.server`` on port 0 in a thread) answers ``POST /v1/chat/completions``:
it reads the student's final answer out of the judge prompt and replies with the text
scripted for that answer (default ``VERDICT: INCORRECT``), after the delay scripted for it.
It records every request body. No model, no network.
"""

from __future__ import annotations

import json
import pickle
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import gymnasium as gym
import pytest
from k15_envs.types import Problem, Reason
from k15_envs.verifiers import make_verifier
from k15_envs.verifiers.judge import JudgeFailure, JudgeVerifier, parse_verdict

pytest.importorskip("openai")

ANSWER_MARK = "Student's final answer:\n"
CORRECT = "The student wrote the same number in another form.\nVERDICT: CORRECT"
INCORRECT = "These differ.\nVERDICT: INCORRECT"
ROWS = [{"problem": "What is 1 divided by 2?", "answer": "\\frac{1}{2}"}]


class Script:
    """What the server says to each final answer, and what it was asked."""

    def __init__(self) -> None:
        self.replies: dict[str, str] = {}
        self.delays: dict[str, float] = {}
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def reset(self) -> None:
        with self.lock:
            self.replies.clear(), self.delays.clear(), self.requests.clear()

    def asked(self) -> list[str]:
        """The final answer of every judge prompt received so far, in order."""
        with self.lock:
            return [answer_of(body["messages"][0]["content"]) for body in self.requests]


def answer_of(prompt: str) -> str:
    """The student's-answer paragraph of a judge prompt."""
    return prompt.split(ANSWER_MARK, 1)[1].split("\n\n", 1)[0]


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        script: Script = self.server.script  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        answer = answer_of(body["messages"][0]["content"])
        with script.lock:
            script.requests.append(body)
            reply, delay = script.replies.get(answer, INCORRECT), script.delays.get(answer, 0.0)
        time.sleep(delay)
        message = {"role": "assistant", "content": reply}
        payload = json.dumps({"id": "chat-1", "object": "chat.completion", "created": 0,
                              "model": body["model"], "choices": [{"index": 0, "message": message,
                              "finish_reason": "stop"}]}).encode()  # fmt: skip
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
            pass


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Script]]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.script = Script()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", httpd.script  # type: ignore[attr-defined]
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture()
def script(server: tuple[str, Script]) -> Script:
    server[1].reset()
    return server[1]


@pytest.fixture()
def url(server: tuple[str, Script]) -> str:
    return server[0]


def half_problem() -> Problem:
    return Problem("t/0", "What is 1 divided by 2?\n\nPut it in a box.", "\\frac{1}{2}", 0.0,
                   {"gold": "\\frac{1}{2}", "question": "What is 1 divided by 2?"})  # fmt: skip


def judge(url: str, **options: Any) -> JudgeVerifier:
    return JudgeVerifier(base_url=url, model="k15", **{"max_retries": 0, **options})


@pytest.mark.parametrize(
    "reply,expected",
    [
        ("steps...\nVERDICT: CORRECT", True),
        ("steps...\nVERDICT: INCORRECT", False),  # INCORRECT is not read as CORRECT
        ("**VERDICT: CORRECT**", True),  # markdown emphasis
        ("verdict: incorrect.", False),  # case, trailing period
        ("VERDICT: CORRECT\nOn reflection...\nVERDICT: INCORRECT", False),  # the last one counts
        ("The verdict is correct.", None),  # not a verdict line
        ("VERDICT: MAYBE", None),
        ("", None),
    ],
)
def test_the_last_verdict_line_decides(reply: str, expected: bool | None) -> None:
    assert parse_verdict(reply) is expected


def test_verdicts_come_from_the_endpoint_and_the_prompt_holds_what_the_judge_needs(
    url: str, script: Script
) -> None:
    script.replies.update({"0.5": CORRECT, "0.7": INCORRECT})
    verifier = judge(url, max_tokens=77)
    good, bad = verifier.verify_many([half_problem()] * 2, ["so \\boxed{0.5}", "\\boxed{0.7}"])
    assert (good.correct, good.reward, good.reason, good.extracted_answer) == (
        True, 1.0, "correct", "0.5")  # fmt: skip
    assert (bad.correct, bad.reward, bad.reason) == (False, 0.0, "wrong")
    body = script.requests[0]
    assert (body["model"], body["temperature"], body["max_tokens"]) == ("k15", 0.0, 77)
    prompt = body["messages"][0]["content"]
    assert "What is 1 divided by 2?" in prompt and "Put it in a box" not in prompt
    assert "Reference answer:\n\\frac{1}{2}\n" in prompt
    assert prompt.rstrip().endswith("VERDICT: CORRECT\nor\nVERDICT: INCORRECT")
    assert verifier.stats["judged_correct"] == 1 and verifier.stats["judged_incorrect"] == 1


def test_an_unmarked_answer_shows_the_end_of_the_response(url: str, script: Script) -> None:
    verifier = judge(url, tail_chars=20)
    verdict = verifier.verify(half_problem(), "I divided one by two and got one half")
    assert verdict.extracted_answer is None and verdict.reason == "wrong"
    shown = script.asked()[0]
    assert "no final answer was marked" in shown and shown.endswith("and got one half")
    assert "I divided" not in shown  # only the last tail_chars characters
    assert verifier.verify(half_problem(), "   ").reason == Reason.NO_ANSWER.value
    assert len(script.requests) == 1  # an empty response is not sent


def test_an_unparseable_reply_is_its_own_reason_counted_and_asked_again(
    url: str, script: Script
) -> None:
    script.replies["0.5"] = "I think it is probably right."
    verifier = judge(url)
    first = verifier.verify(half_problem(), "\\boxed{0.5}")
    assert (first.correct, first.reward, first.reason) == (False, 0.0, "judge_unparseable")
    assert first.extracted_answer == "0.5"
    verifier.verify(half_problem(), "\\boxed{0.5}")
    assert len(script.requests) == 2  # not cached
    assert verifier.stats["judge_unparseable"] == 2


def test_a_server_past_the_timeout_gives_a_judge_error_in_bounded_time(
    url: str, script: Script, caplog: pytest.LogCaptureFixture
) -> None:
    script.delays["0.5"] = 5.0
    verifier = judge(url, timeout_s=0.5, max_retries=1)
    start = time.monotonic()
    verdict = verifier.verify(half_problem(), "\\boxed{0.5}")
    elapsed = time.monotonic() - start
    assert verdict.reason.startswith("judge_error: APITimeoutError") and not verdict.correct
    assert len(verdict.reason) <= len("judge_error: ") + 200
    assert 0.9 < elapsed < 4.0  # two attempts of 0.5 s plus the client's back-off
    assert len(script.requests) == 2  # one bounded retry
    assert verifier.stats["judge_errors"] == 1
    assert "judge request failed" in caplog.text


def test_an_unreachable_server_gives_a_judge_error(url: str) -> None:
    dead = "http://127.0.0.1:9/v1"  # the discard port: nothing listens
    verdicts = judge(dead, timeout_s=2).verify_many([half_problem()] * 2, ["\\boxed{1}"] * 2)
    assert all(v.reason.startswith("judge_error: APIConnectionError") for v in verdicts)


def test_a_question_is_judged_once_and_then_served_from_the_cache(url: str, script: Script) -> None:
    script.replies["0.5"] = CORRECT
    verifier = judge(url)
    responses = ["so \\boxed{0.5}", "Answer: 0.5", "\\boxed{0.5}."]  # one final answer
    verdicts = verifier.verify_many([half_problem()] * 3, responses)
    assert [v.correct for v in verdicts] == [True] * 3 and len(script.requests) == 1
    assert verifier.verify(half_problem(), "\\boxed{0.5}").correct
    assert len(script.requests) == 1
    assert (verifier.stats["cache_hits"], verifier.stats["cache_misses"]) == (1, 1)
    other = Problem("t/1", "What is 2 divided by 4?", "\\frac{1}{2}", 0.0, {})
    verifier.verify(other, "\\boxed{0.5}")  # another problem: another question
    assert len(script.requests) == 2


def test_the_lru_forgets_the_oldest_and_the_disk_cache_outlives_the_verifier(
    url: str, script: Script, tmp_path: Any
) -> None:
    script.replies.update({"1": CORRECT, "2": CORRECT})
    verifier = judge(url, cache_size=1, cache_path=str(tmp_path / "verdicts.sqlite"))
    verifier.verify_many([half_problem()] * 2, ["\\boxed{1}", "\\boxed{2}"])
    verifier.verify(half_problem(), "\\boxed{1}")  # evicted from memory, found on disk
    assert len(script.requests) == 2 and verifier.stats["disk_hits"] == 1
    verifier.close()
    fresh = judge(url, cache_path=str(tmp_path / "verdicts.sqlite"))
    assert fresh.verify(half_problem(), "\\boxed{2}").correct and len(script.requests) == 2
    assert judge(url).verify(half_problem(), "\\boxed{2}").correct  # no file: asked again
    assert len(script.requests) == 3


def test_a_verifier_pickles_with_its_cache_and_without_its_client(url: str, script: Script) -> None:
    script.replies.update({"0.5": CORRECT, "3": CORRECT})
    verifier = judge(url, cache_path=None)
    assert verifier.verify(half_problem(), "\\boxed{0.5}").correct  # client and pool now exist
    copy = pickle.loads(pickle.dumps(verifier))
    assert copy.backend._client is None and copy.backend._pool is None
    assert copy.verify(half_problem(), "\\boxed{0.5}").correct and len(script.requests) == 1
    assert copy.verify(half_problem(), "\\boxed{3}").correct and len(script.requests) == 2


def test_a_backend_that_raises_is_a_judge_error_for_every_prompt() -> None:
    class Broken:
        def complete(self, prompts: list[str]) -> list[str]:
            raise RuntimeError("engine fell over")

    class Partial:
        def complete(self, prompts: list[str]) -> list[Any]:
            return [JudgeFailure("out of memory"), "VERDICT: CORRECT"]

    broken = JudgeVerifier(backend=Broken()).verify_many([half_problem()] * 2, ["1", "2"])
    assert [v.reason for v in broken] == ["judge_error: RuntimeError: engine fell over"] * 2
    partial = JudgeVerifier(backend=Partial()).verify_many([half_problem()] * 2, ["1", "2"])
    assert [v.reason for v in partial] == ["judge_error: out of memory", "correct"]


def test_options_are_validated_with_their_values(url: str) -> None:
    class Backend:
        def complete(self, prompts: list[str]) -> list[str]:
            return []

    with pytest.raises(ValueError, match="exactly one of base_url"):
        JudgeVerifier()
    with pytest.raises(ValueError, match=r"timeout_s=0 \(must be > 0\)"):
        JudgeVerifier(base_url=url, timeout_s=0)
    with pytest.raises(ValueError, match=r"\['max_tokens'\] apply to base_url only"):
        JudgeVerifier(backend=Backend(), max_tokens=5)
    with pytest.raises(ValueError, match="'no_such_module:Judge' is not an importable"):
        JudgeVerifier(backend="no_such_module:Judge")
    with pytest.raises(ValueError, match="backend_kwargs need backend='module:Class'"):
        JudgeVerifier(base_url=url, backend_kwargs={"model": "x"})
    with pytest.raises(ValueError, match="cache_size=-1"):
        JudgeVerifier(base_url=url, cache_size=-1)


def test_a_missing_openai_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import k15_envs.verifiers.judge_backends as judge_module

    real = judge_module.importlib.util.find_spec
    monkeypatch.setattr(judge_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "openai" else real(name, *a))  # fmt: skip
    with pytest.raises(ImportError, match="needs the openai package"):
        JudgeVerifier(base_url="http://127.0.0.1:1/v1")


def test_math_env_grades_with_the_judge_when_asked(url: str, script: Script) -> None:
    script.replies["0.5"] = CORRECT
    env = gym.make("k15/Math-v0", dataset=ROWS, verifier="judge",
                   judge={"base_url": url, "model": "k15", "max_retries": 0})  # fmt: skip
    assert isinstance(env.unwrapped.verifier, JudgeVerifier)
    env.reset(options={"problem_index": 0})
    _, reward, terminated, truncated, info = env.step("1/2 = 0.5, so \\boxed{0.5}")
    assert (reward, terminated, truncated, info["reason"]) == (1.0, True, False, "correct")
    assert "What is 1 divided by 2?" in script.requests[0]["messages"][0]["content"]
    assert make_verifier("judge", base_url=url).kind.value == "judge"
    env.close()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"verifier": "gpt"}, r"verifier='gpt'; choose one of \['math', 'judge'\]"),
        ({"verifier": "judge"}, r"verifier='judge' needs judge=\{'base_url'"),
        ({"judge": {"base_url": "http://x/v1"}}, "judge options were given but verifier='math'"),
        ({"verifier": "judge", "judge": {"url": "http://x/v1"}},
         r"unknown judge option\(s\) \['url'\]"),
    ],
)  # fmt: skip
def test_math_env_rejects_bad_judge_settings(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        gym.make("k15/Math-v0", dataset=ROWS, **kwargs)
