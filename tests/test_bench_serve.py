"""Pure helpers of ``bench.serve_throughput``: percentiles, the load-phase summary, the
summary rows, the free-port helper, log tails and the flags. No server is started."""

import socket

import pytest

from bench.serve_process import free_port, log_tail
from bench.serve_throughput import (
    DEFAULTS,
    QUICK,
    derive_rows,
    parse_args,
    percentile,
    summarize_requests,
)

OFFLINE = {"tokens_per_second": 100.0, "generated_tokens": 4096}
STOP_CLEAN = {"exit_code": 0, "seconds": 4.0, "killed": False, "leftover": []}


def _served(**over):
    base = summarize_requests(
        [{"latency_s": 1.0, "completion_tokens": 30, "error": None}] * 4, wall_seconds=2.0
    )
    return {**base, "cores_busy_server": 1.5, "shutdown": STOP_CLEAN, **over}


@pytest.mark.parametrize(
    "values,q,expected",
    [
        ([3.0, 1.0, 2.0], 50, 2.0),  # order does not matter
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),  # interpolated between the middle two
        ([1.0, 2.0, 3.0, 4.0], 0, 1.0),
        ([1.0, 2.0, 3.0, 4.0], 100, 4.0),
        ([float(i) for i in range(1, 101)], 99, 99.01),  # numpy's "linear" method
        ([7.0], 99, 7.0),  # one value is every percentile
        ([], 50, None),
    ],
)
def test_percentile_interpolates_like_numpy(values, q, expected):
    got = percentile(values, q)
    assert got == (None if expected is None else pytest.approx(expected))


def test_percentile_rejects_q_outside_0_100():
    with pytest.raises(ValueError, match="within"):
        percentile([1.0], 101)


def test_summary_counts_failures_and_keeps_them_out_of_tokens_and_latency():
    records = [
        {"latency_s": 1.0, "completion_tokens": 10, "error": None},
        {"latency_s": 3.0, "completion_tokens": 20, "error": None},
        {"latency_s": 9.0, "error": "APITimeoutError: timed out"},
        {"latency_s": 9.0, "error": "APITimeoutError: timed out"},
    ]
    got = summarize_requests(records, wall_seconds=5.0)
    assert (got["sent"], got["answered"], got["failed"]) == (4, 2, 2)
    assert got["errors"] == ["APITimeoutError: timed out"]  # each message once
    assert got["completion_tokens"] == 30 and got["tokens_per_second"] == pytest.approx(6.0)
    assert got["latency_p50_s"] == pytest.approx(2.0) and got["latency_max_s"] == 3.0


def test_summary_of_nothing_answered_has_no_latency():
    got = summarize_requests([{"latency_s": 1.0, "error": "boom"}], wall_seconds=0.0)
    assert got["answered"] == 0 and got["tokens_per_second"] is None
    assert got["latency_p50_s"] is None and got["latency_max_s"] is None


def test_rows_compare_served_with_offline_and_require_every_answer():
    rows = {r.metric: r for r in derive_rows(OFFLINE, _served(), "tiny, 4 prompts", clients=4)}
    served = rows["served tokens/s vs offline vLLM"]
    assert served.value == pytest.approx(60.0) and served.baseline == 100.0
    assert served.ratio == pytest.approx(0.6) and served.baseline_name == "offline vLLM"
    assert "4 clients" in served.note and "~1.5 cores busy" in served.note
    assert rows["offline vLLM tokens/s (one batch)"].note.startswith("tiny, 4 prompts")
    assert rows["request latency p50"].value == 1.0 and rows["request latency p99"].unit == "s"
    answered = rows["requests answered / sent"]
    assert (answered.value, answered.baseline, answered.ratio) == (4, 4, 1.0)
    assert answered.status == "met"
    assert rows["shutdown after SIGTERM"].note == "clean (exit 0)"


def test_a_failed_request_misses_the_answered_target():
    served = _served(answered=3, failed=1, errors=["InternalServerError: 500"])
    answered = [r for r in derive_rows(OFFLINE, served, "", 4) if r.metric.startswith("req")][-1]
    assert answered.ratio == pytest.approx(0.75) and answered.status.startswith("missed")
    assert "InternalServerError" in answered.note


def test_rows_of_failed_sides_say_why_and_keep_the_shutdown():
    stop = {"exit_code": -9, "seconds": 60.0, "killed": True, "leftover": ["123 raylet"]}
    served = {"error": "k15 serve exited with code 1 before /health", "shutdown": stop}
    rows = derive_rows({"error": "offline child FAILED (exit 1)"}, served, "", 4)
    assert [r.value for r in rows[:2]] == [None, None]
    assert "FAILED" in rows[0].note and "before /health" in rows[1].note
    assert rows[-1].note == "killed (exit -9), 1 processes left (killed)"
    assert len(derive_rows(OFFLINE, None, "", 4)) == 2  # served side not run: no shutdown row


def test_free_port_can_be_bound():
    port = free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", port))  # nothing holds it


def test_log_tail_reads_from_an_offset(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("old run\n" + "".join(f"line {i}\n" for i in range(5)))
    assert log_tail(log, lines=2) == "line 3\nline 4"
    assert log_tail(log, lines=100, offset=len("old run\n")).splitlines()[0] == "line 0"
    assert log_tail(tmp_path / "missing.log") == ""


def test_quick_fills_only_the_sizes_not_given():
    args = parse_args(["--quick", "--clients", "3", "--dtype", "float32"])
    assert (args.model, args.prompts, args.max_tokens) == (
        QUICK["model"], QUICK["prompts"], QUICK["max_tokens"])  # fmt: skip
    assert args.clients == 3 and args.dtype == "float32"
    full = parse_args(["--dtype", "float32"])
    assert (full.prompts, full.clients, full.model) == (
        DEFAULTS["prompts"], DEFAULTS["clients"], DEFAULTS["model"])  # fmt: skip
