"""User verifiers for the reward tests, imported by dotted path ("dapo_test_verifiers:...")."""

from __future__ import annotations

import os
import signal
import sys
import time

from dapo_rl.rewards import Verdict


def exact(completion: str, reference: str) -> bool:
    return completion.strip() == reference.strip()


def length_score(completion: str, reference: str) -> float:
    return len(completion) / 10.0


def pair(completion: str, reference: str) -> tuple[float, bool]:
    return 0.5, completion == reference


def verdict(completion: str, reference: str) -> Verdict:
    return Verdict(0.25, True)


def has_answer_line(completion: str, reference: str) -> float:
    """A format reward: +1 when the text has an ``Answer:`` line."""
    return 1.0 if "Answer:" in completion else 0.0


def wrong_type(completion: str, reference: str) -> str:
    return "yes"


def chaos(completion: str, reference: str) -> float:
    """Misbehaves as the completion asks; otherwise scores 1.0 for "ok"."""
    match completion:
        case "raise":
            raise RuntimeError("boom")
        case "hang":
            time.sleep(60)  # the worker's timer interrupts this
        case "stubborn":
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(60)  # deaf to the timer, like C code: the worker is killed
        case "nan":
            return float("nan")
        case "inf":
            return float("-inf")
        case "oom":
            return float(len(bytearray(64 << 30)))  # beyond the worker's memory cap
        case "exit":
            sys.exit(3)
        case "crash":
            os.kill(os.getpid(), signal.SIGKILL)
    return 1.0 if completion == "ok" else -1.0


def as_number(completion: str, reference: str) -> float:
    """The completion read as the reward: "1e39" is finite in Python, inf in float32."""
    return float(completion)


def huge_every_third(completion: str, reference: str) -> float:
    """1e39 (inf in float32) for a third of the completions, +1 / -1 for the rest."""
    return (1e39, 1.0, -1.0)[len(completion) % 3]


def forks(completion: str, reference: str) -> float:
    """Forks as the completion asks; the reference names a file for the child's pid."""
    match completion:
        case "fork-return":  # the child returns too, into the scoring loop
            os.fork()
        case "fork-exit":  # the child exits at once, through Python's exit machinery
            if os.fork() == 0:
                sys.exit(0)
        case "fork-sleep":  # the child outlives the call, holding the worker's pipes
            pid = os.fork()
            if pid == 0:
                time.sleep(300)
                os._exit(0)
            with open(reference, "w") as f:
                f.write(str(pid))
        case "spawn":  # a subprocess that outlives the call
            import subprocess

            proc = subprocess.Popen(["sleep", "300"])
            with open(reference, "w") as f:
                f.write(str(proc.pid))
    return 1.0
