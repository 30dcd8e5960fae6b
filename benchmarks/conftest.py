"""pytest configuration of the benchmarks: import path, the `large` marker, and when it runs.

The large config (T=64, B=128, D=1024, H=1024) takes seconds per call of the reference and of
torch, and so, with their float64 oracles, do the medium-L2 stacks with random lengths
(medium-L2-len, medium-L2-len-bi: together 2 minutes on 2 busy cores), so these are skipped
when benchmarks are disabled (``--benchmark-disable``, a quick check that every benchmark runs
and is correct) unless RNNCORE_BENCH_LARGE=1. With benchmarks enabled they always run;
deselect them with ``-m "not large"``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# `import common` from the test module, whatever pytest's import mode.
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker here: the project's pytest settings use --strict-markers."""
    config.addinivalue_line(
        "markers", "large: seconds per call (large, medium-L2-len, medium-L2-len-bi)"
    )


def benchmarks_disabled(config: pytest.Config) -> bool:
    """Whether pytest-benchmark runs each benchmarked function only once."""
    return bool(config.getoption("benchmark_disable", default=False)) and not config.getoption(
        "benchmark_enable", default=False
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the large configs under --benchmark-disable unless RNNCORE_BENCH_LARGE=1."""
    if not benchmarks_disabled(config) or os.environ.get("RNNCORE_BENCH_LARGE") == "1":
        return
    skip = pytest.mark.skip(
        reason="large configs skipped under --benchmark-disable; set RNNCORE_BENCH_LARGE=1"
    )
    for item in items:
        if item.get_closest_marker("large") is not None:
            item.add_marker(skip)
