"""Running the benchmark's jobs: each job a function (most start a script in a subprocess with its own log), n at a
time, one line per finished job with a time-left estimate; failures reported at the end, jobs left for the next
command (Deferred) counted; Ctrl-C stops the children. Knows nothing about LaGO."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np


_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()


def run_logged(cmd: list[str], cwd: Path, log: Path, threads: int) -> tuple[int, float]:
    """Run `cmd` in `cwd`, stdout+stderr to `log`; return (exit code, wall seconds)."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        TOKENIZERS_PARALLELISM="false",
        WANDB_MODE=env.get("WANDB_MODE", "disabled"),
        PYTHONUNBUFFERED="1",
    )
    cwd.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(log, "w") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        with _children_lock:
            _children.add(proc)
        try:
            code = proc.wait()
        finally:
            with _children_lock:
                _children.discard(proc)
    return code, time.time() - start


def kill_children() -> None:
    with _children_lock:
        for proc in list(_children):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def tail(path: Path, n: int = 15) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-n:])
    except OSError:
        return ""


class Deferred(Exception):
    """A job left for the next command: --stop-after-minutes passed before it started."""


def check_time(deadline: Optional[float]) -> None:
    if deadline is not None and time.time() >= deadline:
        raise Deferred("not started before --stop-after-minutes")


@dataclass
class Job:
    name: str
    fn: Callable[[], str]
    """runs the job, returns a one-line summary; raises RuntimeError with an actionable message on failure"""
    kind: str = ""
    """jobs of one kind take about as long (for the time-left estimate)"""


def time_left(unfinished: list[Job], durations: dict[str, list[float]], n_parallel: int) -> str:
    """Rough time left: unfinished jobs x the mean duration of finished jobs of their kind / parallel jobs."""
    known = [np.mean(durations[j.kind]) for j in unfinished if durations.get(j.kind)]
    untimed = sorted({j.kind for j in unfinished if not durations.get(j.kind)})
    if not unfinished:
        return ""
    text = f"~{sum(known) / max(1, n_parallel) / 60:.0f} min left"
    return text + (f" + untimed kinds ({', '.join(untimed)})" if untimed else "")


def run_jobs(jobs: list[Job], n_parallel: int) -> tuple[list[str], int]:
    """Run the jobs, n_parallel at a time; print one line per finished job; return the failures and the number of
    jobs left for the next command (Deferred)."""
    failures: list[str] = []
    deferred = 0
    if not jobs:
        return failures, deferred
    start = time.time()
    durations: dict[str, list[float]] = {}

    def timed(job: Job) -> tuple[str, float]:
        t = time.time()
        summary = job.fn()
        return summary, time.time() - t

    with ThreadPoolExecutor(max_workers=max(1, n_parallel)) as pool:
        pending = {pool.submit(timed, job): job for job in jobs}
        done_count = 0
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    job = pending.pop(fut)
                    done_count += 1
                    head = f"[{done_count}/{len(jobs)} {(time.time() - start) / 60:.1f} min]"
                    try:
                        summary, secs = fut.result()
                        durations.setdefault(job.kind, []).append(secs)
                        print(
                            f"{head} {summary}; {time_left(list(pending.values()), durations, n_parallel)}", flush=True
                        )
                    except Deferred as e:
                        deferred += 1
                        print(f"{head} left for the next command: {job.name}: {e}", flush=True)
                    except Exception as e:  # noqa: BLE001 - keep going, report at the end
                        failures.append(f"{job.name}: {e}")
                        print(f"{head} FAILED {job.name}: {e}", flush=True)
        except KeyboardInterrupt:
            for fut in pending:
                fut.cancel()
            kill_children()
            raise
    return failures, deferred
