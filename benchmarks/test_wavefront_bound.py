"""benchmarks/wavefront_bound.py runs at a tiny size and reports both rounds' times."""

from __future__ import annotations

import re

import wavefront_bound


def test_reports_the_bound_and_the_stack(capsys) -> None:
    assert wavefront_bound.main(["3", "2", "5", "16"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "T=3 B=2 D=5 H=16" in out[0]
    rounds = [line for line in out if line.startswith("layer 0 alone")]
    assert len(rounds) == 2
    for line in rounds:
        l0, l1, bound, stack = (float(v) for v in re.findall(r"([0-9.]+) ms", line))
        assert min(l0, l1, stack) > 0 and bound == max(l0, l1)
    schedules = [line for line in out if line.startswith("rnncore.LSTM at 2 threads")]
    assert len(schedules) == 2
    for line in schedules:
        by_layer, wave = (float(v) for v in re.findall(r"([0-9.]+) ms", line))
        ratio = float(re.search(r"\(([0-9.]+)x\)", line).group(1))
        assert min(by_layer, wave, ratio) > 0


def test_usage_without_four_sizes(capsys) -> None:
    assert wavefront_bound.main(["3"]) == 2
    assert "T B D H" in capsys.readouterr().err
