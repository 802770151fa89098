"""Stopping a run from outside: SIGINT and SIGTERM, agreed across the ranks of a torchrun.

The first signal asks the run to stop after the current step (it then writes a checkpoint
and raises ``Interrupted`` with the command that resumes it); a second one raises at once.
Under torchrun every rank asks ``StopSignals.agreed`` at the same points, so one rank's
signal stops all of them after the same step.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import threading
from pathlib import Path

from dapo_rl import dist


class Interrupted(KeyboardInterrupt):
    """A run stopped by SIGINT or SIGTERM; the CLI exits with status 128 + ``signum``."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


def _resume_hint(run_dir: Path) -> str:
    saved = shlex.quote(str(run_dir / "config.yaml"))
    return f"resume with: dapo train --config {saved} resume=true"


class StopSignals:
    """SIGINT/SIGTERM while the run is in its loop: the first asks it to stop after the
    current step, a second raises ``Interrupted`` at once. Main thread only; the previous
    handlers come back on exit."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.signum: int | None = None
        self._pid = os.getpid()
        self._previous: dict = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if os.getpid() != self._pid:
            return  # a forked verifier worker inherited this handler; the trainer decides
        name = signal.Signals(signum).name
        if self.signum is not None:
            raise Interrupted(
                signum, f"stopped at once by a second {name}; {_resume_hint(self.run_dir)}"
            )
        self.signum = signum
        print(
            f"{name} received: finishing this step, then writing a checkpoint "
            f"(send it again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def agreed(self) -> bool:
        """Whether any rank has been signalled (collective under torchrun: every rank
        asks at the same points, so all of them stop after the same step)."""
        signum = dist.agreed_signal(self.signum)
        if signum is not None:
            self.signum = signum
        return signum is not None

    def stopped(self, when: str, ckpt: Path | None) -> Interrupted:
        name = signal.Signals(self.signum).name
        saved = f"; checkpoint {ckpt}" if ckpt else ""
        return Interrupted(
            self.signum, f"stopped by {name} {when}{saved}; {_resume_hint(self.run_dir)}"
        )
