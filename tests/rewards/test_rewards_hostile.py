"""Hostile references and verifiers: linear parsing, a time limit on every verifier, scores
finite in float32, and verifiers that fork or leave processes behind."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dapo_rl.rewards import Verdict, dapo_answer, gsm8k_answer, score_all, text
from dapo_rl.rewards.isolation import bounded

# One round of the old unwrap loop stripped a single " ." and rescanned every \boxed: a
# 50,000-character reference like this cost ~25 s per call, 200,000 characters ~7 minutes.
BOXES_THEN_DOTS = "x\\boxed{1}" * 10_000 + " ." * 50_000  # 200,000 characters
DOLLARS = "7" + " $" * 100_000


def _old_unwrap(answer: str) -> str:
    """The previous, quadratic unwrap: the reference the linear one must agree with."""
    previous = None
    while answer != previous:
        previous = answer
        answer = answer.strip().strip("$*").strip()
        if answer.endswith(".") and not answer.endswith(".."):
            answer = answer[:-1]
        boxed = text.last_boxed(answer)
        if boxed is not None and answer.startswith(("\\boxed", "\\fbox")):
            answer = boxed[1]
    return answer


WRAPPING = st.text(alphabet=" \n\t$*.\\boxedfx{}1,", max_size=60)


@settings(max_examples=300, deadline=None)
@given(answer=WRAPPING | st.text(max_size=40))
def test_linear_unwrap_agrees_with_the_old_loop(answer):
    assert text.unwrap(answer) == _old_unwrap(answer)


@pytest.mark.parametrize(
    "reference",
    ["x\\boxed{1}" * 50 + " ." * 500, "7" + " $" * 1000, "1" + " ." * 1000],
    ids=["boxes-then-dots", "dollars", "dots"],
)
def test_unwrap_scans_for_a_box_at_most_once(monkeypatch, reference):
    """Linear by count, not by clock: the old loop called last_boxed once per stripped char."""
    calls = []
    real = text.last_boxed
    monkeypatch.setattr(text, "last_boxed", lambda s: calls.append(len(s)) or real(s))
    text.unwrap(reference)
    assert len(calls) <= 1
    assert sum(calls) <= len(reference)


@pytest.mark.parametrize("verifier", [dapo_answer, gsm8k_answer])
@pytest.mark.parametrize(
    "reference", [BOXES_THEN_DOTS, DOLLARS], ids=["boxes-then-dots", "dollars"]
)
def test_a_200k_reference_is_scored_well_inside_the_time_limit(verifier, reference):
    # Linear code takes ~0.1 s here; the old code took minutes and would be a "timeout".
    verdicts, counts = score_all(verifier, ["Answer: 7", "Answer: 1"], [reference] * 2, timeout=10)
    assert counts == {"timeout": 0, "error": 0, "nonfinite": 0}
    assert [v.status for v in verdicts] == ["ok", "ok"]


def test_a_200k_completion_with_a_hostile_tail_is_bounded_too():
    completion = "Answer: " + " $" * 100_000
    verdicts, counts = score_all(dapo_answer, [completion], ["7"], timeout=10)
    assert verdicts == [Verdict(-1.0, False)] and counts["timeout"] == 0


@bounded
def _sleepy(completion: str, reference: str) -> bool:
    time.sleep(float(completion))
    return True


@bounded
def _backtracking(completion: str, reference: str) -> bool:
    # 2^25 paths: seconds of C-level matching, unless the timer interrupts the re engine
    return re.fullmatch(r"(a+)+b", "a" * 25) is not None


def test_bounded_verifiers_run_under_the_time_limit_in_process():
    verdicts, counts = score_all(_sleepy, ["0", "3", "0"], ["", "", ""], timeout=0.2)
    assert [v.status for v in verdicts] == ["ok", "timeout", "ok"]
    assert counts["timeout"] == 1


def test_the_time_limit_interrupts_the_regex_engine():
    verdicts, _ = score_all(_backtracking, ["x"], [""], timeout=0.1)
    assert verdicts == [Verdict(-1.0, False, "timeout")]


def test_bounded_verifiers_off_the_main_thread_go_to_a_worker_with_the_limit():
    out = []
    thread = threading.Thread(
        target=lambda: out.append(score_all(_sleepy, ["3", "0"], ["", ""], timeout=0.2))
    )
    thread.start()
    thread.join(timeout=30)
    verdicts, counts = out[0]
    assert [v.status for v in verdicts] == ["timeout", "ok"] and counts["timeout"] == 1


def test_the_in_process_timer_leaves_sigalrm_as_it_found_it():
    import signal

    before = signal.getsignal(signal.SIGALRM)
    score_all(dapo_answer, ["Answer: 1"], ["1"])
    assert signal.getsignal(signal.SIGALRM) is before
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def test_ctrl_c_in_process_is_not_a_verdict():
    @bounded
    def interrupted(completion: str, reference: str) -> bool:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        score_all(interrupted, ["a"], ["b"])


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), 0.0, -1.0, 1e39])
def test_score_all_refuses_a_timeout_it_cannot_set(timeout):
    with pytest.raises(ValueError):
        score_all(dapo_answer, ["a"], ["a"], timeout=timeout)


# --- scores finite in the trainer's float32 arithmetic ------------------------------------


@pytest.fixture
def _helpers_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


@pytest.mark.usefixtures("_helpers_on_path")
def test_a_reward_of_1e39_counts_as_nonfinite_in_a_worker():
    from dapo_rl.rewards import get_verifier

    verifier = get_verifier("dapo_test_verifiers:as_number")
    scores = ["1e39", "-1e39", "1e33", "1e30", "-2.5", "inf"]
    verdicts, counts = score_all(verifier, scores, [""] * len(scores))
    assert [v.status for v in verdicts] == ["nonfinite"] * 3 + ["ok", "ok", "nonfinite"]
    assert [v.score for v in verdicts] == [-1.0, -1.0, -1.0, 1e30, -2.5, -1.0]
    assert counts == {"timeout": 0, "error": 0, "nonfinite": 4}


def test_a_weighted_sum_beyond_float32_counts_as_nonfinite_in_process():
    from dapo_rl.rewards import get_verifier

    verifier = get_verifier("1e39*dapo_answer")
    verdicts, counts = score_all(verifier, ["Answer: 1"], ["1"])
    assert verdicts == [Verdict(-1.0, False, "nonfinite")] and counts["nonfinite"] == 1


def test_the_score_limit_keeps_a_group_of_float32_rewards_finite():
    import torch

    from dapo_rl.algo import group_advantages
    from dapo_rl.rewards.verdict import SCORE_LIMIT

    rewards = torch.tensor([SCORE_LIMIT] * 4 + [-SCORE_LIMIT] * 4, dtype=torch.float32)
    assert torch.isfinite(group_advantages(rewards, 8)).all()
    assert torch.isfinite(rewards.sum()) and torch.isfinite(rewards.abs().sum())


# --- verifiers that fork ---------------------------------------------------------------------


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie waiting for init to reap it is not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within  # SIGKILL lands in microseconds; 10 s is slack
    while _running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not _running(pid)


@pytest.mark.usefixtures("_helpers_on_path")
@pytest.mark.parametrize("kind", ["fork-return", "fork-exit"])
def test_a_verifier_whose_child_returns_does_not_scramble_the_batch(kind):
    from dapo_rl.rewards import get_verifier

    verifier = get_verifier("dapo_test_verifiers:forks")
    for _ in range(2):  # the next batch too: no answers left over from a forked copy
        verdicts, counts = score_all(verifier, [kind, "ok", "ok"], ["", "", ""], timeout=5)
        assert verdicts == [Verdict(1.0, True)] * 3 and sum(counts.values()) == 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.usefixtures("_helpers_on_path")
@pytest.mark.parametrize("kind", ["fork-sleep", "spawn"])
def test_what_a_verifier_leaves_running_ends_with_its_worker(kind, tmp_path):
    from dapo_rl.rewards import get_verifier
    from dapo_rl.rewards.isolation import close_workers

    verifier = get_verifier("dapo_test_verifiers:forks")
    pid_file = tmp_path / "pid"
    verdicts, _ = score_all(verifier, [kind, "ok"], [str(pid_file), ""], timeout=5)
    assert verdicts == [Verdict(1.0, True)] * 2
    left = int(pid_file.read_text())
    assert _running(left)  # it outlived the call, as the verifier meant
    assert score_all(verifier, ["ok"], [""])[0] == [Verdict(1.0, True)]  # pool still serves
    close_workers()  # what the trainer does at exit
    assert _gone(left)


TRAINER = """
import sys, time
sys.path.insert(0, sys.argv[1])
from dapo_rl.rewards import get_verifier, score_all
verdicts, _ = score_all(get_verifier("dapo_test_verifiers:forks"), ["fork-sleep"], [sys.argv[2]])
print(verdicts[0].status, flush=True)
time.sleep(300)
"""


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_trainer_killed_with_sigkill_leaves_no_process_holding_its_output(tmp_path):
    import os
    import signal
    import subprocess
    import sys

    pid_file = tmp_path / "pid"
    here = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")}
    trainer = subprocess.Popen(
        [sys.executable, "-c", TRAINER, here, str(pid_file)], stdout=subprocess.PIPE, env=env
    )
    assert trainer.stdout.readline() == b"ok\n"
    left = int(pid_file.read_text())
    os.kill(trainer.pid, signal.SIGKILL)
    trainer.wait()
    assert _gone(left)  # the worker sees its trainer gone within a second, ends its group
    assert trainer.stdout.read() == b""  # EOF: nobody holds the trainer's stdout any more
