"""sample_shards with a stand-in EnvRunnerGroup: dead runners, hung runners, deadlines.

The stand-in keeps RLlib's semantics that matter here: a call to a dead actor marks it
unhealthy and returns nothing; a call that misses ``timeout_seconds`` returns nothing and
leaves the actor healthy (RLlib only marks actors unhealthy on actor errors). The real-Ray
version (a runner that sleeps forever in its second call) is in tests/reliability.
"""

from __future__ import annotations

import pytest

from rllib_k15.algorithm.sharding import EnvRunnerLost, sample_deadline_s, sample_shards


class FakeGroup:
    def __init__(self, n: int, *, hang: dict[int, int] = (), die: dict[int, int] = ()):
        self.healthy = set(range(1, n + 1))
        self.calls = {i: 0 for i in self.healthy}
        self.hang, self.die = dict(hang), dict(die)  # runner id -> the call that hangs / dies
        self.timeouts: list[float | None] = []

    def healthy_env_runner_ids(self):
        return sorted(self.healthy)

    def foreach_env_runner(self, funcs, *, local_env_runner, remote_worker_ids, timeout_seconds):
        assert local_env_runner is False
        self.timeouts.append(timeout_seconds)
        replies = []
        for func, rid in zip(funcs, remote_worker_ids):
            self.calls[rid] += 1
            if self.die.get(rid) == self.calls[rid]:
                self.healthy.discard(rid)  # RayActorError: marked unhealthy, no reply
            elif self.hang.get(rid) == self.calls[rid]:
                assert timeout_seconds is not None, "a hung call without deadline never returns"
            else:
                replies.append(func(f"runner-{rid}"))
        return replies


def _call(runner, shard_index, shard):
    return (runner, shard_index, list(shard))


SHARDS = [[0, 1], [2, 3]]


def test_a_runner_that_misses_the_deadline_is_killed_and_its_shard_redone():
    group = FakeGroup(2, hang={2: 1})
    killed: list[list[int]] = []

    def kill(ids):
        killed.append(ids)
        group.healthy.difference_update(ids)  # what the algorithm's kill does: mark unhealthy

    run = sample_shards(group, SHARDS, _call, restore=lambda: None, deadline_s=5.0, kill=kill)
    assert killed == [[2]] and run.hung == 1 and run.redone == 1
    assert [r[1:] for r in run.results] == [(0, [0, 1]), (1, [2, 3])]  # both shards, in order
    assert run.results[1][0] == "runner-1"  # the redone shard ran on the healthy runner
    assert group.timeouts == [5.0, 5.0]


def test_a_dead_runner_is_not_killed_again_only_redone():
    group = FakeGroup(2, die={1: 1})
    run = sample_shards(group, SHARDS, _call, restore=lambda: None, deadline_s=5.0,
                        kill=lambda ids: pytest.fail(f"killed {ids}"))  # fmt: skip
    assert run.hung == 0 and run.redone == 1
    assert [r[1:] for r in run.results] == [(0, [0, 1]), (1, [2, 3])]


def test_runners_that_keep_hanging_end_in_a_clear_error_naming_the_problems():
    group = FakeGroup(1, hang={1: 1})
    restarts = iter(range(10))

    def kill(ids):  # the restarted actor hangs again on its next call
        group.hang[1] = group.calls[1] + 1

    with pytest.raises(EnvRunnerLost, match=r"problems \[0, 1, 2, 3\]"):
        sample_shards(group, [[0, 1, 2, 3]], _call, restore=lambda: next(restarts),
                      deadline_s=1.0, kill=kill, max_failures=2)  # fmt: skip


def test_without_a_deadline_nothing_is_killed_and_a_deadline_needs_kill():
    group = FakeGroup(2)
    run = sample_shards(group, SHARDS, _call, restore=lambda: None)
    assert (run.redone, run.hung) == (0, 0) and group.timeouts == [None]
    with pytest.raises(ValueError, match="kill"):
        sample_shards(group, SHARDS, _call, restore=lambda: None, deadline_s=1.0)


def test_the_deadline_is_derived_from_the_shards_token_budget():
    # 4 problems × 8 samples × 256 tokens at ≥ 2 tok/s, plus a 120 s floor
    assert sample_deadline_s(4 * 8 * 256, 2.0, 120.0) == pytest.approx(120 + 4096)
    with pytest.raises(ValueError, match="min_tokens_per_s"):
        sample_deadline_s(10, 0.0, 1.0)
