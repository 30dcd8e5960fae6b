"""report.py and train_step.py end to end, each implementation in its own worker process (on
the smallest config and on tiny random-length stacks), the harness's pieces (per-round ratios,
worker failures), the GEMM ceiling probe report.py uses, and the sampler's matrix-vector probe
(train_step.py's sampling ceiling)."""

from __future__ import annotations

import json
import os
import statistics
import sys

import numpy as np
import pytest

import common
import report
import train_step
import workers
from rnncore import _core

# Tiny twins of charrnn-L2-len and charrnn-L2-len-bi, so that CI runs the whole path (every
# cell, the packed torch runner, the full-length rnncore runner, both tables) in seconds.
TINY = (
    common.Config("tiny-L2-len", 9, 6, 5, 7, 2, varlen=True),
    common.Config("tiny-L2-len-bi", 9, 6, 5, 7, 2, varlen=True, bidirectional=True),
)
QUICK = ["--repeats", "3", "--min-time", "0.002", "--settle", "0", "--budget", "0.5"]


def table_rows(out: str, prefix: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose header starts with prefix, as {column: cell}."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(prefix))
    head = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(head, (c.strip() for c in line.strip("|").split("|")), strict=True)))
    return rows


def number(cell: str) -> float:
    """A table cell's number, without bold or marks."""
    return float(cell.strip("*").rstrip("x ✗†").strip())


@pytest.mark.parametrize("kernel", ["blas", "packed"])
def test_gemm_probe_measures_a_checked_product(kernel):
    # 37 columns over 2 threads: slices of 32 and 5, a partial panel
    r = _core._gemm_probe(5, 37, 19, kernel, 2, 0.01)
    assert r["gflops"] > 0 and r["calls"] >= 1 and r["seconds"] >= 0.01
    assert r["threads"] == 2 and r["kernel"] in {"openblas", "portable", "avx2", "avx512"}
    with pytest.raises(ValueError, match="kernel must be 'blas' or 'packed', got 'mkl'"):
        _core._gemm_probe(4, 4, 4, "mkl", 1)
    with pytest.raises(ValueError, match="M, N and K must be >= 1, got 0, 4, 4"):
        _core._gemm_probe(0, 4, 4, kernel, 1)


def test_gemv_probe_measures_a_checked_product():
    # 45 rows: a partial 32-row block of the sampler's kernel
    r = _core._gemv_probe(45, 19, 0.01)
    assert r["gb_per_s"] > 0 and r["calls"] >= 1
    assert r["seconds_per_call"] * r["calls"] >= 0.01
    with pytest.raises(ValueError, match="rows and cols must be >= 1, got 0, 4"):
        _core._gemv_probe(0, 4)
    with pytest.raises(ValueError, match=r"min_time must be in \(0, 60\] seconds, got 0"):
        _core._gemv_probe(4, 4, 0.0)


# ---- the harness's pieces -------------------------------------------------------------------


def test_ratios_are_medians_of_per_round_ratios():
    ours, other = [1.0, 2.0, 4.0], [2.0, 2.0, 8.0]  # per round: 2, 1, 2
    assert workers.paired_ratio(other, ours) == 2.0
    assert statistics.median(other) / statistics.median(ours) == 1.0  # what it is not
    with pytest.raises(ValueError, match="paired samples needed: 2 against 3"):
        workers.paired_ratio([1.0, 2.0], ours)
    assert workers.rotated(["a", "b", "c"], 4) == ["b", "c", "a"]
    # Each implementation at its faster allocator setting: rnncore (malloc tuned), torch.
    m = report.Measurement("rnn", "minchar", "fwdbwd", 1, 1e9)
    m.samples_s = {
        "rnncore": [1.0, 1.0, 1.0],
        "rnncore (malloc tuned)": [0.5, 0.4, 1.0],
        "reference": [5.0, 2.0, 3.0],
        "torch": [2.0, 2.0, 1.0],
        "torch (malloc tuned)": [3.0, 3.0, 3.0],
    }
    assert m.best("rnncore") == "rnncore (malloc tuned)" and m.best("torch") == "torch"
    assert m.ratio("torch") == statistics.median([2 / 0.5, 2 / 0.4, 1 / 1.0]) == 4.0
    assert m.ratio("reference") == 5.0  # 10, 5, 3
    assert report._times(m, "rnncore") == ["1000", "**500**"]


def test_a_worker_that_dies_or_hangs_or_fails_is_named():
    argv = [sys.executable, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"]
    w = workers.Worker("report", "rnncore", argv=argv)
    with pytest.raises(workers.WorkerError) as error:
        w.request("hello", timeout=60)
    assert f"worker 'rnncore' (pid {w.pid}) exited with status 3 while serving 'hello'" in str(
        error.value
    )
    assert "its stderr ends:\nboom" in str(error.value)
    w.close(forward_stderr=False)

    w = workers.Worker(
        "report", "torch", argv=[sys.executable, "-c", "import time; time.sleep(60)"]
    )
    with pytest.raises(workers.WorkerError, match=r"'torch' \(pid \d+\) did not answer 'hello'"):
        w.request("hello", timeout=0.5)
    assert w.proc.poll() is not None  # killed
    w.close()

    w = workers.Worker("report", "reference", workers.MALLOC_TUNED)  # a real one
    try:
        hello = w.request("hello", timeout=120)
        assert hello["pid"] == w.pid != os.getpid()
        assert hello["allocator"] == workers.MALLOC_TUNING  # set before its Python started
        with pytest.raises(workers.WorkerError, match="'sample' before 'setup'"):
            w.request("sample", timeout=60, settle=0, calls=1)
        with pytest.raises(workers.WorkerError, match="unknown op 'fly'; this worker serves"):
            w.request("fly", timeout=60)
    finally:
        w.close()


# ---- report.py end to end ------------------------------------------------------------------


@pytest.fixture
def tiny_configs(monkeypatch):
    for cfg in TINY:
        monkeypatch.setitem(common.CONFIGS, cfg.name, cfg)
    yield TINY
    common.make_problem.cache_clear()
    common.oracle.cache_clear()


@pytest.mark.parametrize("cell", common.CELLS.values(), ids=lambda c: c.name)
@pytest.mark.parametrize("mode", common.MODES)
def test_reference_and_packed_torch_match_the_oracle_with_random_lengths(tiny_configs, cell, mode):
    # Whatever the rnncore build: the reference (float32) and torch on a PackedSequence against
    # the float64 reference, including exact zeros past each length.
    for cfg in tiny_configs:
        problem = common.make_problem(cell.name, cfg.name)
        assert problem.lengths is not None and problem.lengths.min() < cfg.T
        assert problem.dy.shape == (cfg.T, cfg.B, cfg.directions * cfg.H)
        impls = ["reference"] + (["torch"] if common.torch_installed() else [])
        for impl in impls:
            out = common.make_runner(impl, problem, mode)()
            assert common.check(impl, out, cell, cfg, mode) < common.tolerance(cfg)
    names = set(common.make_problem(cell.name, "tiny-L2-len-bi").state_dict())
    assert {"weight_ih_l1_reverse", "bias_hh_l0_reverse", "weight_hh_l1"} <= names


def test_report_runs_every_implementation_in_its_own_worker(
    tiny_configs, capsys, monkeypatch, tmp_path
):
    monkeypatch.setattr(report, "CEILING_SQUARE", 64)  # keep the ceiling probes quick
    monkeypatch.setattr(report, "CEILING_MIN_TIME", 0.01)
    configs = ["minchar", *(c.name for c in tiny_configs)]
    argv = ["--configs", ",".join(configs), "--threads", "1", *QUICK]
    assert report.main([*argv, "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    torch = common.torch_installed()

    head = ["cell", "config", "threads", "rnncore ms", "rnncore (malloc tuned) ms"]
    head += ["reference ms", "torch ms", "torch (malloc tuned) ms", "rnncore GFLOP/s"]
    head += ["% of ceiling", "% of step ceiling", "× reference", "× torch"]
    assert "| " + " | ".join(head) + " |" in out
    rows = {(r["cell"], r["config"]): r for r in table_rows(out, "| cell | config | threads |")}
    results = json.loads((tmp_path / "r.json").read_text())
    hellos = results["env"]["workers"]
    pids = {h["pid"] for h in hellos.values()}
    assert len(pids) == len(hellos) and os.getpid() not in pids  # one process each
    assert {n for n, h in hellos.items() if h["allocator"] == workers.MALLOC_TUNING} == {
        "rnncore (malloc tuned)",
        *(["torch (malloc tuned)"] if torch else []),
    }
    info = hellos["rnncore"]
    assert f"recurrent kernel **{info['recurrent_kernel']}**" in out
    assert f"OpenBLAS corename **{info['corename']}**" in out
    assert "(malloc tuned): `MALLOC_MMAP_THRESHOLD_=33554432` `MALLOC_TRIM_THRESHOLD_" in out

    for m in results["results"]:
        if common.unavailable("rnncore", common.CELLS[m["cell"]], common.CONFIGS[m["config"]]):
            continue
        row, samples = rows[(m["cell"], m["config"])], m["samples_s"]
        assert len({len(s) for s in samples.values()}) == 1  # one sample each per round
        for column in ("rnncore", "rnncore (malloc tuned)", "reference"):
            assert number(row[f"{column} ms"]) > 0, row
        assert sum(row[f"rnncore{s} ms"].startswith("**") for s in ("", " (malloc tuned)")) == 1
        assert row["% of ceiling"].endswith("%"), row
        # The table's ratios: per-round ratios of the same rounds' samples, faster settings.
        for other in ("reference", "torch") if torch else ("reference",):
            best = {i: workers.fastest(samples, report.labels_of(i)) for i in ("rnncore", other)}
            ratio = workers.paired_ratio(samples[best[other]], samples[best["rnncore"]])
            assert row[f"× {other}"] == f"{ratio:.2f}", (row, samples)
        assert (row["torch ms"] != "–") == torch, row
    assert "| sgemm 64×64×64 | 1 |" in out
    assert "| LSTM step minchar (B=1, 4H=400, H=100) | 1 |" in out
    assert "- random lengths (`-len`, seed-fixed, U[1, T])" in out

    lengths = {
        (r["cell"], r["config"]): r for r in table_rows(out, "| cell | config | threads | mean")
    }
    for cell in common.CELLS.values():
        for cfg in tiny_configs:
            reason = common.unavailable("rnncore", cell, cfg)
            if reason is not None:  # a build without lengths=: skipped with the reason
                assert f"{cell.name} {cfg.name}: {reason}" in out
                continue
            row = lengths[(cell.name, cfg.name)]
            share = float(np.mean(common.lengths_of(cfg))) / cfg.T
            assert row["mean length / T"] == f"{share:.2f}" and number(row["ratio"]) > 0, row


def test_without_torch_its_columns_are_empty(capsys, monkeypatch):
    monkeypatch.setattr(common, "torch_installed", lambda: False)
    argv = ["--cells", "rnn", "--configs", "minchar", "--threads", "1", "--no-ceiling", *QUICK]
    assert report.main(argv) == 0
    out = capsys.readouterr().out
    (row,) = table_rows(out, "| cell | config | threads |")
    assert row["torch ms"] == row["torch (malloc tuned) ms"] == row["× torch"] == "–", row
    assert number(row["reference ms"]) > 0 and number(row["× reference"]) > 0, row
    assert "- torch not installed: its columns are empty" in out


def test_a_wrong_answer_in_a_worker_stops_the_run(capsys, monkeypatch):
    real = common.oracle

    def wrong(*key):
        out = dict(real(*key))
        out["y"] = out["y"] * 1.01  # the reference the workers get, 1% off
        return out

    monkeypatch.setattr(common, "oracle", wrong)
    monkeypatch.setattr(common, "torch_installed", lambda: False)  # fewer workers to start
    argv = ["--cells", "rnn", "--configs", "minchar", "--threads", "1", "--no-ceiling", *QUICK]
    assert report.main(argv) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "error: worker 'rnncore' (pid " in captured.err
    assert "failed at 'setup': CorrectnessError: rnncore rnn minchar" in captured.err
    assert "differs from the float64 reference: y: relative error" in captured.err


def test_a_worker_that_cannot_start_stops_the_run(capsys, monkeypatch):
    monkeypatch.setattr(
        report, "worker_specs", lambda args: [("reference", "as found"), ("bogus", "as found")]
    )
    argv = ["--cells", "rnn", "--configs", "minchar", "--threads", "1", "--no-ceiling", *QUICK]
    assert report.main(argv) == 1
    err = capsys.readouterr().err
    assert "error: worker 'bogus' (pid " in err and "while serving 'hello'" in err
    assert "ValueError: unknown implementation 'bogus'" in err


# ---- train_step.py end to end --------------------------------------------------------------


def test_train_step_times_every_worker(capsys):
    argv = ["--threads", "1", "--steps", "2", "--rounds", "3", "--settle", "0"]
    assert train_step.main([*argv, "--sample-chars", "200"]) == 0
    out = capsys.readouterr().out
    (row,) = table_rows(out, "| threads |")
    for impl in ("rnncore", "torch"):
        tuned = f"{impl} (malloc tuned) ms"
        if impl == "torch" and not common.torch_installed():
            assert row[f"{impl} ms"] == row[tuned] == "–", row
            continue
        assert number(row[f"{impl} ms"]) > 0 and number(row[tuned]) > 0, row
        assert (row[f"{impl} ms"].startswith("**")) != (row[tuned].startswith("**")), row
        assert number(row[f"{impl} steps/s"]) > 0, row
    if common.torch_installed():
        assert row["speed-up"].endswith("x") and number(row["speed-up"]) > 0, row
    # The same run's sgemm ceiling, and every GFLOP/s figure is the step's work over its time.
    ceiling = number(row["sgemm ceiling GFLOP/s"])
    assert ceiling > 1, row
    flops = train_step.step_flops("lstm", 65)
    best_ms = min(number(row["rnncore ms"]), number(row["rnncore (malloc tuned) ms"]))
    gflops = float(row["rnncore GFLOP/s"].split()[0])
    assert gflops == pytest.approx(flops / best_ms / 1e6, rel=0.02, abs=0.1), row
    share = float(row["rnncore GFLOP/s"].split("(")[1].rstrip("%)"))
    assert share == pytest.approx(100 * gflops / ceiling, abs=1), row
    if common.torch_installed():
        torch_gflops = float(row["torch GFLOP/s"].split()[0])
        need = float(row["1.5x torch needs GFLOP/s"].split()[0])
        assert need == pytest.approx(1.5 * torch_gflops, rel=0.02, abs=0.1), row
    assert "GEMM work per step: 3.565 GFLOP" in out
    assert "recurrent kernel **" in out and "OpenBLAS corename **" in out
    assert "(malloc tuned): started with `MALLOC_MMAP_THRESHOLD_=33554432`" in out
    assert "sampling, 1 thread:" in out and "% of it" in out


def test_wavefront_worker_times_the_stacks_on_the_wavefront_schedule(capsys, monkeypatch):
    tiny = common.Config("tiny-L2", 9, 6, 5, 7, 2)
    monkeypatch.setitem(common.CONFIGS, tiny.name, tiny)
    argv = ["--cells", "lstm,gru", "--configs", "tiny-L2", "--threads", "2", "--no-ceiling"]
    assert report.main([*argv, "--wavefront", *QUICK]) == 0
    out = capsys.readouterr().out
    assert "| rnncore (wavefront) ms |" in out
    assert "(wavefront): rnncore's layer objects with `wavefront = True`" in out
    rows = table_rows(out, "| cell | config | threads |")
    assert {r["cell"] for r in rows} == {"lstm", "gru"}
    for row in rows:
        assert number(row["rnncore (wavefront) ms"]) > 0, row
        settings = ("", " (malloc tuned)", " (wavefront)")
        assert sum(row[f"rnncore{s} ms"].startswith("**") for s in settings) == 1
    assert report.IMPL_SETTINGS["rnncore"] == (workers.AS_FOUND, workers.MALLOC_TUNED)
    assert os.environ.get(workers.WAVEFRONT_VARIABLE) is None
