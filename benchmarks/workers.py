"""Worker processes for report.py and train_step.py: one per implementation × allocator setting.

Timing every implementation in one process lets them disturb each other: one library's
allocator state, loaded OpenMP runtimes and thread pools are there while the other runs. Here
each implementation runs in its own persistent Python process, started once per run with its
environment (so glibc reads ``MALLOC_*`` before the interpreter starts) and driven by the parent
over pipes; an idle worker blocks reading its pipe, so it competes for nothing.

Protocol: the parent writes one JSON object per line to the worker's stdin, ``{"op": NAME,
...arguments}``; the worker answers each with one JSON line on a pipe of its own (the stdout it
was started with; its fd 1 is pointed at stderr, so that anything a library prints cannot
corrupt the protocol): ``{"ok": true, "result": ...}`` or ``{"ok": false, "kind":
"correctness" | "error", "error": MESSAGE, "traceback": TEXT}``. A worker's stderr goes to a
temporary file; its tail is part of the error when the worker dies, and what it wrote is copied
to the parent's stderr when the worker is closed.

The worker is ``python benchmarks/workers.py MODULE IMPL``: it imports MODULE (``report`` or
``train_step``, next to this file) and serves the handlers ``MODULE.worker_handlers(IMPL)``
returns, a dict of op name to a function taking the request's arguments as keywords.

Also here, shared by both entry points: the allocator settings, rotated rounds, the median of
per-round ratios, CpuWatch and the header lines describing where each worker ran.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent

# --------------------------------------------------------------------------------------------
# Allocator settings
# --------------------------------------------------------------------------------------------

AS_FOUND = "as found"
MALLOC_TUNED = "malloc tuned"
# glibc: serve allocations below 32 MiB from the heap rather than fresh mmap()s, and give freed
# memory back to the system only above 1 GiB free at the top: a training step's large,
# short-lived buffers are then reused instead of being mapped, zeroed and unmapped every call.
MALLOC_TUNING = {"MALLOC_MMAP_THRESHOLD_": "33554432", "MALLOC_TRIM_THRESHOLD_": "1073741824"}
# Not an allocator setting: rnncore's layer objects on the wavefront schedule (report.py
# --wavefront; common.py reads the variable when it builds a stack).
WAVEFRONT = "wavefront"
WAVEFRONT_VARIABLE = "RNNCORE_BENCH_WAVEFRONT"
SETTINGS: dict[str, dict[str, str]] = {
    AS_FOUND: {},
    MALLOC_TUNED: MALLOC_TUNING,
    WAVEFRONT: {WAVEFRONT_VARIABLE: "1"},
}


def label(impl: str, setting: str) -> str:
    """A worker's name in tables: the implementation, and the setting unless it is as found."""
    return impl if setting == AS_FOUND else f"{impl} ({setting})"


def allocator_environment() -> dict[str, str]:
    """The variables of this process's environment that steer glibc's allocator."""
    return {k: v for k, v in os.environ.items() if k.startswith("MALLOC_") or k == "GLIBC_TUNABLES"}


# --------------------------------------------------------------------------------------------
# The parent's side
# --------------------------------------------------------------------------------------------


class WorkerError(RuntimeError):
    """A worker died, did not answer in time, or answered a request with an error."""


class WorkerMismatch(WorkerError):
    """A worker's outputs differ from the float64 reference (its check raised)."""


STDERR_TAIL = 2000  # characters of a dead worker's stderr quoted in the error


class Worker:
    """One worker process: an implementation under one allocator setting.

    argv defaults to this file as a worker of module for impl; tests pass other commands.
    The environment is this process's, updated with SETTINGS[setting].
    """

    def __init__(
        self,
        module: str,
        impl: str,
        setting: str = AS_FOUND,
        argv: Sequence[str] | None = None,
    ) -> None:
        self.impl, self.setting, self.label = impl, setting, label(impl, setting)
        self.env = dict(os.environ, **SETTINGS[setting])
        self.argv = list(argv or [sys.executable, str(Path(__file__).resolve()), module, impl])
        self.stderr: IO[bytes] = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=self.env,
            bufsize=0,
        )
        self.pid = self.proc.pid
        self._buffer = b""
        self.hello: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"worker {self.label!r} (pid {self.pid})"

    def send(self, op: str, **arguments: Any) -> None:
        """Write one request; its answer is read by receive()."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps({"op": op, **arguments}) + "\n").encode())
        except BrokenPipeError:
            raise self._dead(op) from None

    def receive(self, op: str, timeout: float | None = None) -> Any:
        """The answer to the request op sent last, or WorkerError (WorkerMismatch)."""
        reply = json.loads(self._read_line(op, timeout))
        if reply["ok"]:
            return reply["result"]
        error = WorkerMismatch if reply["kind"] == "correctness" else WorkerError
        message = f"{self} failed at {op!r}: {reply['error']}"
        if reply["kind"] != "correctness":
            message += "\n" + reply["traceback"].rstrip()
        raise error(message)

    def request(self, op: str, timeout: float | None = None, **arguments: Any) -> Any:
        """send, then receive."""
        self.send(op, **arguments)
        return self.receive(op, timeout)

    def _read_line(self, op: str, timeout: float | None) -> str:
        """The next line of the protocol pipe, waiting at most timeout seconds (None: forever)."""
        assert self.proc.stdout is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while b"\n" not in self._buffer:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if not selector.select(left):
                    self.kill()
                    raise WorkerError(f"{self} did not answer {op!r} within {timeout:g} s")
                chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
                if not chunk:
                    raise self._dead(op)
                self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def _dead(self, op: str) -> WorkerError:
        """The error for a worker found dead while serving op: exit status, stderr's tail."""
        try:
            status = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
            status = self.proc.wait()
        tail = self.stderr_text()[-STDERR_TAIL:].rstrip()
        return WorkerError(
            f"{self} exited with status {status} while serving {op!r}"
            + (f"; its stderr ends:\n{tail}" if tail else " (no stderr output)")
        )

    def stderr_text(self) -> str:
        """Everything the worker wrote to stderr so far."""
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def kill(self) -> None:
        """End the worker now (it is ours: its pid came from Popen)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def ask_to_quit(self) -> None:
        """Send 'quit' and close its stdin, without waiting (close() waits)."""
        assert self.proc.stdin is not None
        if self.proc.poll() is None and not self.proc.stdin.closed:
            try:
                self.send("quit")
                self.proc.stdin.close()
            except (WorkerError, OSError):
                self.kill()

    def close(self, forward_stderr: bool = True) -> None:
        """Ask the worker to quit (kill it after 10 s), copy its stderr to ours, free pipes."""
        self.ask_to_quit()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        text = self.stderr_text().strip()
        if forward_stderr and text:
            print("\n".join(f"[{self.label}] {ln}" for ln in text.splitlines()), file=sys.stderr)
        for pipe in (self.proc.stdin, self.proc.stdout, self.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()


class Pool:
    """Workers started together, each answering 'hello' before anything is timed.

    A context manager: on leaving, every worker is closed (killed if it does not quit).
    """

    def __init__(self, module: str, specs: Iterable[tuple[str, str]]) -> None:
        self.module, self.specs = module, list(specs)
        self.workers: dict[str, Worker] = {}

    def __enter__(self) -> Pool:
        try:
            for impl, setting in self.specs:
                w = Worker(self.module, impl, setting)
                self.workers[w.label] = w
            for w in self.workers.values():  # all start at once: imports overlap
                w.send("hello")
            for w in self.workers.values():
                w.hello = w.receive("hello", timeout=STARTUP_TIMEOUT)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getitem__(self, name: str) -> Worker:
        return self.workers[name]

    def __contains__(self, name: object) -> bool:
        return name in self.workers

    def pids(self) -> list[int]:
        """The workers' process ids (for CpuWatch)."""
        return [w.pid for w in self.workers.values()]

    def close(self) -> None:
        """Close every worker (all asked to quit first, so that they exit side by side)."""
        for w in self.workers.values():
            w.ask_to_quit()
        for w in self.workers.values():
            w.close()


STARTUP_TIMEOUT = 300.0  # seconds for a worker to import its libraries and say hello


def rotated(items: Sequence[Any], r: int) -> list[Any]:
    """items in round r's order: starting at item r mod len(items)."""
    k = r % len(items)
    return [*items[k:], *items[:k]]


def run_rounds(
    workers: Sequence[Worker], rounds: int, requests: dict[str, dict[str, Any]]
) -> dict[str, list[float]]:
    """Samples by worker label, one per round: in round r the workers, in rotated order, are
    asked one at a time for op 'sample' with requests[label]; each answers seconds per call."""
    samples: dict[str, list[float]] = {w.label: [] for w in workers}
    for r in range(rounds):
        for w in rotated(workers, r):
            samples[w.label].append(float(w.request("sample", **requests[w.label])["seconds"]))
    return samples


def paired_ratio(other: Sequence[float], ours: Sequence[float]) -> float:
    """The median over rounds of other[r] / ours[r]: both sampled in the same round r.

    A disturbance that slows one round slows both of its samples, so it cancels in the ratio
    where it would not in a ratio of medians.
    """
    if len(other) != len(ours) or not ours:
        raise ValueError(
            f"paired samples needed: {len(other)} against {len(ours)} (one each per round)"
        )
    return statistics.median(o / u for o, u in zip(other, ours, strict=True))


def fastest(samples: dict[str, list[float]], labels: Iterable[str]) -> str | None:
    """Of the labels that have samples, the one with the smallest median (None: none has)."""
    present = [lb for lb in labels if samples.get(lb)]
    return min(present, key=lambda lb: statistics.median(samples[lb]), default=None)


# --------------------------------------------------------------------------------------------
# CPU use of other processes
# --------------------------------------------------------------------------------------------


def _process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, all its threads (0 if it is gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text.rpartition(")")[2].split()  # after "pid (comm)": field 3 (state) onwards
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


class CpuWatch:
    """How much of the machine's CPU time went to other processes since the watch started.

    "Ours" is this process and the given worker processes (alive for the whole watch). On a
    2-core machine a second busy process wrecks every multi-threaded timing (threads that
    wait at a barrier for a descheduled partner), by factors of 10-1000, so the reports say
    when that happened instead of printing such numbers as if they were real.
    """

    def __init__(self, pids: Iterable[int] = ()) -> None:
        self.pids = list(pids)
        self.start = self._now()

    def _now(self) -> tuple[float, float, float, float]:
        """(wall s, CPU s busy on the machine, CPU s stolen by the hypervisor, our CPU s)."""
        tick = os.sysconf("SC_CLK_TCK")
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        except (OSError, ValueError):
            fields = []
        # user nice system idle iowait irq softirq steal ...
        busy = sum(fields[i] for i in (0, 1, 2, 5, 6) if i < len(fields)) / tick
        steal = (fields[7] if len(fields) > 7 else 0) / tick
        own = resource.getrusage(resource.RUSAGE_SELF)
        workers = sum(_process_cpu_seconds(pid) for pid in self.pids)
        return time.perf_counter(), busy, steal, own.ru_utime + own.ru_stime + workers

    def others(self) -> dict[str, float]:
        """Shares of all CPUs' time since start: used by other processes, and stolen."""
        now = self._now()
        wall, busy, steal, own = (b - a for a, b in zip(self.start, now, strict=True))
        capacity = max(wall * len(os.sched_getaffinity(0)), 1e-9)
        return {"others": max(0.0, busy - own) / capacity, "steal": steal / capacity}


# --------------------------------------------------------------------------------------------
# Describing where the workers ran
# --------------------------------------------------------------------------------------------


def worker_environment(impl: str) -> dict[str, Any]:
    """What a worker reports at 'hello': its pid, allocator variables, rnncore's BLAS and ISA
    paths (rnncore workers), torch's version, CPU capability and oneDNN (torch workers)."""
    info: dict[str, Any] = {
        "impl": impl,
        "pid": os.getpid(),
        "allocator": allocator_environment(),
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
    }
    if impl.startswith("rnncore") or impl == "ceiling":
        import rnncore

        blas = rnncore.blas_info()
        info |= {
            "rnncore": rnncore.__version__,
            "corename": blas.get("corename"),
            "blas_config": blas.get("config"),
            "recurrent_kernel": blas.get("recurrent_kernel"),
            "pointwise_kernel": blas.get("pointwise_kernel"),
            "rnncore_threads": rnncore.get_num_threads(),
        }
    if impl == "torch":
        import torch

        cpu = getattr(torch.backends, "cpu", None)
        info |= {
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "torch_cpu_capability": cpu.get_cpu_capability() if cpu is not None else None,
            "mkldnn_available": torch.backends.mkldnn.is_available(),
            "mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
        }
    return info


def _allocator_text(variables: dict[str, str]) -> str:
    """`A=1 B=2`, or 'no MALLOC_* / GLIBC_TUNABLES set'."""
    if not variables:
        return "no MALLOC_* / GLIBC_TUNABLES set"
    return " ".join(f"`{k}={v}`" for k, v in sorted(variables.items()))


def header_lines(hellos: dict[str, dict[str, Any]]) -> list[str]:
    """Markdown bullet lines: rnncore's ISA paths and OpenBLAS core, torch's build, and the
    allocator settings, each as reported by the workers (labels grouped where they agree)."""
    lines = []
    groups: dict[tuple[Any, ...], list[str]] = {}
    for name, h in hellos.items():
        if "recurrent_kernel" in h:
            key = (h["rnncore"], h["recurrent_kernel"], h["pointwise_kernel"], h["corename"])
            groups.setdefault((*key, h["OPENBLAS_CORETYPE"]), []).append(name)
    for (version, recurrent, pointwise, corename, coretype), names in groups.items():
        lines.append(
            f"- rnncore {version}: recurrent kernel **{recurrent}**, pointwise kernel "
            f"**{pointwise}**, OpenBLAS corename **{corename}**, "
            f"OPENBLAS_CORETYPE={coretype or '(unset)'} (reported by {', '.join(names)})"
        )
    torch_groups: dict[tuple[Any, ...], list[str]] = {}
    for name, h in hellos.items():
        if "torch" in h:
            key = (h["torch"], h["torch_cpu_capability"], h["mkldnn_available"])
            torch_groups.setdefault((*key, h["mkldnn_enabled"]), []).append(name)
    for (version, capability, available, enabled), names in torch_groups.items():
        onednn = "available" if available else "not available"
        onednn += ", enabled" if enabled else ", disabled"
        lines.append(
            f"- torch {version}: CPU capability **{capability}**, oneDNN (mkldnn) {onednn} "
            f"(reported by {', '.join(names)})"
        )
    alloc: dict[str, list[str]] = {}
    for name, h in hellos.items():
        alloc.setdefault(_allocator_text(h["allocator"]), []).append(name)
    lines.append(
        "- allocator, per worker process: "
        + "; ".join(f"{', '.join(names)}: {text}" for text, names in alloc.items())
    )
    return lines


# --------------------------------------------------------------------------------------------
# The worker's side
# --------------------------------------------------------------------------------------------


def serve(module_name: str, impl: str) -> int:
    """The worker's loop: answer requests until 'quit' or the end of stdin."""
    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")  # the pipe the parent reads
    os.dup2(2, 1)  # fd 1, and so print() and C libraries' printf, now write to stderr

    def answer(reply: dict[str, Any]) -> None:
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()

    module = importlib.import_module(module_name)
    handlers: dict[str, Callable[..., Any]] = module.worker_handlers(impl)
    for line in sys.stdin:
        request = json.loads(line)
        op = request.pop("op")
        if op == "quit":
            break
        try:
            if op not in handlers:
                raise ValueError(f"unknown op {op!r}; this worker serves {', '.join(handlers)}")
            answer({"ok": True, "result": handlers[op](**request)})
        except Exception as error:  # answered, so that the parent can stop the run cleanly
            correctness = type(error).__name__ == "CorrectnessError"
            answer(
                {
                    "ok": False,
                    "kind": "correctness" if correctness else "error",
                    "error": f"{type(error).__name__}: {error}",
                    "traceback": traceback.format_exc(),
                }
            )
    return 0


def thread_counts(text: str) -> list[int]:
    """An argparse type: comma-separated positive thread counts."""
    try:
        counts = [int(n) for n in text.split(",")]
    except ValueError:
        counts = []
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected thread counts like 1,2, got {text!r}")
    return counts


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: {sys.argv[0]} MODULE IMPL (a worker process of report.py/train_step.py)")
    sys.exit(serve(sys.argv[1], sys.argv[2]))
