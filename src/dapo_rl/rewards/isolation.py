"""Fault-isolated, time- and memory-bounded scoring: ``score_all`` and its worker processes.

Choices:
- Verifiers marked ``@bounded`` (``dapo_answer``, ``gsm8k``) read a capped tail of the text with
  linear-time code; they run in this process, each call still under a SIGALRM interval timer
  of ``timeout`` seconds (the ``re`` engine checks for signals, so a pathological pattern is
  interrupted too). That costs microseconds per call where a worker round trip costs about
  0.1 ms (``benchmarks/verifier_timing.py``). Off the main thread, or while another interval
  timer runs, the timer is not ours and they go to the workers like every other verifier.
- Every other verifier (``math``, user functions, sums that include them) runs in persistent
  worker processes forked from this one. Fork means the verifier object is inherited, never
  pickled, so closures work; only texts and results cross the pipe.
- Each worker caps its address space (RLIMIT_AS: its size at fork plus ``WORKER_MEMORY``), so
  an exponent tower fails with MemoryError instead of eating the machine.
- Two clocks per call. In the worker a SIGALRM interval timer interrupts the call after
  ``timeout`` seconds (Python-level work such as sympy). In this process, a worker that has
  not answered by ``timeout + grace`` is stuck in C code (a huge integer power); it is killed
  and a fresh one is forked for the rest of its chunk. Either way the call is a "timeout".
- math-verify's own timeouts use ``signal.alarm`` (main thread only, whole seconds) and would
  reset the worker's timer, so the ``math`` verifier switches them off and relies on this one.
- A batch is split into contiguous chunks, one per worker (up to ``MAX_WORKERS``); a worker
  streams results back one by one, which tells this process which call is running. A message
  that is not the answer to the running call (a forked copy of the worker talking) fails
  that call and replaces the worker, instead of scrambling the batch.
- Verifiers that fork: a child that returns from the verifier ends there (``os._exit``)
  instead of serving jobs as a second worker; children that exit are reaped after each call.
  Each worker leads its own process group, and a worker is always ended with its whole
  group, so what a verifier leaves running (a sleeping fork, a subprocess) ends with it: at
  a timeout, a crash, or when the trainer exits or dies. Processes a verifier starts may
  live across its calls (a helper server) but not beyond its worker.
"""

from __future__ import annotations

import atexit
import multiprocessing
import multiprocessing.connection
import os
import pickle
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from dapo_rl.rewards.verdict import FAILURES, STATUSES, Verdict, as_verdict, checked, failure

Verifier = Callable[[str, str], Verdict]

MAX_WORKERS = min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)
MIN_CHUNK = 32  # completions per worker before another worker is worth forking
WORKER_MEMORY = 2 << 30  # bytes a worker may allocate beyond its size at fork
MAX_POOLS = 4  # distinct verifiers with live workers (train + eval + a spare)
MAX_TIMEOUT = 86400.0  # seconds; a per-call limit beyond a day is no limit

_IN_WORKER = False


class _Deadline(BaseException):
    """Raised inside a worker by its interval timer; not an Exception, so user code can't eat it."""


def bounded(fn: Verifier) -> Verifier:
    """Mark ``fn`` as cheap and bounded by construction: ``score_all`` runs it in-process."""
    fn._dapo_bounded = True
    return fn


def is_bounded(fn: Callable) -> bool:
    return getattr(fn, "_dapo_bounded", False)


def in_worker() -> bool:
    """True inside a scoring worker, where calls are already under a time limit."""
    return _IN_WORKER


def _is_timeout(error: BaseException) -> bool:
    return isinstance(error, TimeoutError) or type(error).__name__ == "TimeoutException"


def guarded(fn: Verifier, completion: str, reference: str) -> Verdict:
    """One call with a raised exception or a NaN score turned into a counted failure."""
    try:
        return checked(as_verdict(fn(completion, reference)))
    except (Exception, SystemExit) as error:
        return failure("timeout" if _is_timeout(error) else "error")


def _timed(fn: Verifier, completion: str, reference: str, timeout: float) -> Verdict:
    """``guarded`` under an interval timer; needs ``_raise_deadline`` as the SIGALRM handler."""
    try:
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            return guarded(fn, completion, reference)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Deadline:
        return failure("timeout")
    except KeyboardInterrupt:
        raise  # Ctrl-C during in-process scoring is the trainer's, not a verdict
    except BaseException as error:  # e.g. math-verify's TimeoutException (a BaseException)
        return failure("timeout" if _is_timeout(error) else "error")


def _in_process(fn: Verifier, jobs: list, timeout: float) -> list[Verdict] | None:
    """Every job scored here, each under the timer; None when the timer is not ours to use."""
    if threading.current_thread() is not threading.main_thread():
        return None  # signals reach the main thread only
    if signal.getitimer(signal.ITIMER_REAL)[0]:
        return None  # someone else's timer is running
    previous = signal.signal(signal.SIGALRM, _raise_deadline)
    pid = os.getpid()
    try:
        verdicts = []
        for completion, reference in jobs:
            verdicts.append(_timed(fn, completion, reference, timeout))
            if os.getpid() != pid:
                os._exit(0)  # a verifier forked and its child returned here: it ends now
        return verdicts
    finally:
        signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)


def _raise_deadline(signum, frame):
    raise _Deadline()


def _limit_memory(extra: int) -> None:
    """Cap this process's address space at its current size plus ``extra`` bytes (Linux)."""
    try:
        import resource

        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = size + extra if hard == resource.RLIM_INFINITY else min(size + extra, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, ValueError):
        pass  # no /proc or no rlimits here: the time limit still holds


def _reap() -> None:
    """Collect the exit status of every child a verifier left that has ended (no zombies)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass  # no children left


def _kill_group(pgid: int) -> None:
    """SIGKILL every process of the group ``pgid`` (a worker and what it left running)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # already gone


def _serve(fn: Verifier, conn, parent: int) -> None:
    """Worker main loop: receive (timeout, jobs), send one (index, score, acc, status) per job."""
    global _IN_WORKER
    _IN_WORKER = True
    me = os.getpid()
    os.setpgid(0, 0)  # its own group: ended as one with whatever its verifier starts
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    signal.signal(signal.SIGALRM, _raise_deadline)
    _limit_memory(WORKER_MEMORY)
    while True:
        while not conn.poll(1.0):
            if os.getppid() != parent:
                _kill_group(me)  # the trainer is gone: so are this worker and its leftovers
                return
        message = conn.recv()
        if message is None:
            return
        timeout, jobs = message
        for index, completion, reference in jobs:
            v = _timed(fn, completion, reference, timeout)
            if os.getpid() != me:
                os._exit(0)  # a fork of the verifier returned here: it must not answer
            conn.send((index, v.score, v.acc, v.status))
            _reap()


def _preload() -> None:
    """Load and warm math-verify here once, so every forked worker starts with it ready."""
    from dapo_rl.rewards import symbolic

    symbolic.warm()


class _Worker:
    """One forked process serving one verifier, and the jobs it has not answered yet."""

    def __init__(self, fn: Verifier):
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=_serve, args=(fn, child, os.getpid()), daemon=True, name="dapo-verifier"
        )
        self.proc.start()
        try:
            os.setpgid(self.proc.pid, self.proc.pid)  # also here: no race with the worker's own
        except OSError:
            pass  # it got there first, or has already exited
        child.close()
        self.pending: deque = deque()
        self.since = 0.0  # when the oldest pending job started, as seen from here

    def submit(self, jobs: list, timeout: float) -> None:
        self.pending = deque(jobs)
        self.since = time.monotonic()
        self.conn.send((timeout, jobs))

    def kill(self) -> None:
        _kill_group(self.proc.pid)
        self.proc.kill()
        self.proc.join()
        self.conn.close()

    def close(self) -> None:
        try:
            self.conn.send(None)
            self.proc.join(timeout=1.0)
        except OSError:
            pass
        self.kill()  # the group too: what its verifier left running ends with it


def _answers(message: object, index: int) -> bool:
    """Whether ``message`` is a worker's answer to job ``index``."""
    return (
        isinstance(message, tuple)
        and len(message) == 4
        and message[0] == index
        and message[3] in STATUSES
    )


class _Pool:
    """Workers for one verifier; ``run`` scores jobs and replaces workers that hang or die."""

    def __init__(self, fn: Verifier):
        self.fn = fn
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.workers: list[_Worker] = []

    def _submit(self, k: int, jobs: list, timeout: float) -> None:
        for _ in range(2):  # a worker that died while idle is replaced once
            if k == len(self.workers):
                self.workers.append(_Worker(self.fn))
            elif not self.workers[k].proc.is_alive():
                self.workers[k].kill()
                self.workers[k] = _Worker(self.fn)
            try:
                return self.workers[k].submit(jobs, timeout)
            except OSError:
                self.workers[k].kill()
                self.workers[k] = _Worker(self.fn)
        raise RuntimeError("could not start a verifier worker")

    def _replace(self, k: int, status: str, results: dict, timeout: float) -> None:
        """The running job fails with ``status``; a fresh worker takes the rest of the chunk."""
        worker = self.workers[k]
        index = worker.pending.popleft()[0]
        results[index] = failure(status)
        worker.kill()
        self.workers[k] = _Worker(self.fn)
        if worker.pending:
            self._submit(k, list(worker.pending), timeout)

    def _drain(self, k: int, results: dict, timeout: float) -> None:
        worker = self.workers[k]
        try:
            while worker.pending and worker.conn.poll():
                message = worker.conn.recv()
                if not _answers(message, worker.pending[0][0]):
                    self._replace(k, "error", results, timeout)  # a forked copy talking
                    return
                index, score, acc, status = message
                worker.pending.popleft()
                results[index] = Verdict(score, acc, status)
                worker.since = time.monotonic()
        except (EOFError, OSError, pickle.UnpicklingError):
            self._replace(k, "error", results, timeout)  # crashed: segfault, OOM kill

    def run(self, jobs: list, timeout: float) -> dict[int, Verdict]:
        try:
            return self._run(jobs, timeout)
        except BaseException:  # e.g. Ctrl-C: workers mid-batch would answer the next batch
            for worker in self.workers:
                worker.kill()
            self.workers = []
            raise

    def _run(self, jobs: list, timeout: float) -> dict[int, Verdict]:
        n = max(1, min(MAX_WORKERS, -(-len(jobs) // MIN_CHUNK)))
        for k in range(n):
            self._submit(k, jobs[k * len(jobs) // n : (k + 1) * len(jobs) // n], timeout)
        grace = max(1.0, 0.5 * timeout)
        results: dict[int, Verdict] = {}
        while busy := [k for k in range(n) if self.workers[k].pending]:
            first_deadline = min(self.workers[k].since for k in busy) + timeout + grace
            ready = multiprocessing.connection.wait(
                [self.workers[k].conn for k in busy], max(0.0, first_deadline - time.monotonic())
            )
            for k in busy:
                if self.workers[k].conn in ready:
                    self._drain(k, results, timeout)
            now = time.monotonic()
            for k in busy:
                worker = self.workers[k]
                if worker.pending and now > worker.since + timeout + grace:
                    self._replace(k, "timeout", results, timeout)  # stuck outside Python
        return results

    def close(self) -> None:
        for worker in self.workers:
            worker.close()
        self.workers = []


_POOLS: dict[int, _Pool] = {}
_POOLS_LOCK = threading.Lock()


def _pool_for(fn: Verifier) -> _Pool:
    """The live pool for ``fn`` (most recently used last), forking its first worker lazily."""
    with _POOLS_LOCK:
        if any(pool.pid != os.getpid() for pool in _POOLS.values()):
            _POOLS.clear()  # this process was forked: those workers belong to the parent
        pool = _POOLS.pop(id(fn), None)
        if pool is None:
            _preload()
            while len(_POOLS) >= MAX_POOLS:
                _POOLS.pop(next(iter(_POOLS))).close()
            pool = _Pool(fn)
        _POOLS[id(fn)] = pool  # the pool holds fn, so id(fn) cannot be reused meanwhile
        return pool


@atexit.register
def close_workers() -> None:
    """Stop every worker process (they are daemons; this just ends them promptly)."""
    with _POOLS_LOCK:
        pools = [p for p in _POOLS.values() if p.pid == os.getpid()]
        _POOLS.clear()
    for pool in pools:
        pool.close()


def score_all(
    verifier: Verifier,
    completions: Sequence[str],
    references: Sequence[str],
    *,
    timeout: float = 2.0,
) -> tuple[list[Verdict], dict[str, int]]:
    """Score every (completion, reference) pair; never raises for a bad completion.

    A call that raises, takes longer than ``timeout`` seconds, or returns a non-finite score
    gives ``Verdict(-1.0, False, status)``; the second value counts each failure status:
    ``{"timeout": n, "error": n, "nonfinite": n}``.
    """
    if len(completions) != len(references):
        raise ValueError(f"{len(completions)} completions but {len(references)} references")
    if not 0 < timeout <= MAX_TIMEOUT:  # NaN fails this too
        raise ValueError(f"timeout must be in (0, {MAX_TIMEOUT:g}] seconds, got {timeout}")
    pairs = list(zip(completions, references, strict=True))
    verdicts = None
    if in_worker():  # a term of a sum, already under the worker's timer
        verdicts = [guarded(verifier, c, r) for c, r in pairs]
    elif is_bounded(verifier):
        verdicts = _in_process(verifier, pairs, timeout)
    if verdicts is None and not pairs:
        verdicts = []
    elif verdicts is None:
        jobs = [(i, c, r) for i, (c, r) in enumerate(pairs)]
        pool = _pool_for(verifier)
        with pool.lock:
            results = pool.run(jobs, timeout)
        verdicts = [results[i] for i in range(len(jobs))]
    counts = {status: 0 for status in FAILURES}
    for v in verdicts:
        if v.status in counts:
            counts[v.status] += 1
    return verdicts, counts
