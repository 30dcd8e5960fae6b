"""rnncore.cli: `rnncore train` then `rnncore sample` (metrics, plot, resume), bad flags and
files (exit 2), the default corpus, and Ctrl-C saving a checkpoint."""

from __future__ import annotations

import importlib.util
import json
import math
import re

import pytest

from conftest import TEXT
from rnncore.checkpoint import load_checkpoint
from rnncore.cli import main
from rnncore.data import load_corpus


def test_cli_train_then_sample(tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text(TEXT, encoding="utf-8")
    ckpt, metrics, plot = tmp_path / "m.npz", tmp_path / "m.jsonl", tmp_path / "loss.png"
    args = [
        "train", str(text), "--hidden-size", "16", "--embedding-size", "8", "--seq-length",
        "10", "--batch-size", "4", "--max-steps", "30", "--eval-every", "10", "--sample-every",
        "15", "--sample-length", "20", "--checkpoint", str(ckpt), "--metrics", str(metrics),
        "--val-fraction", "0.1", "--log-every", "5", "--lr", "0.01",
    ]  # fmt: skip
    have_matplotlib = importlib.util.find_spec("matplotlib") is not None
    assert main([*args, *(["--plot", str(plot)] if have_matplotlib else [])]) == 0
    out = capsys.readouterr().out
    assert "val loss" in out and "--- sample at step 15 ---" in out and "done: step 30" in out
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert {"step", "epoch", "train_loss", "lr", "chars_per_sec", "elapsed_s"} <= set(rows[0])
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    assert len(vals) == 3 and all(math.isfinite(v) for v in vals)
    if have_matplotlib:
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert load_checkpoint(ckpt).step == 30

    assert main(["sample", str(ckpt), "--prime", "the", "--length", "40", "--seed", "3"]) == 0
    first = capsys.readouterr().out
    assert first.startswith("the") and len(first.rstrip("\n")) == 43
    assert main(["sample", str(ckpt), "--prime", "the", "--length", "40", "--seed", "3"]) == 0
    assert capsys.readouterr().out == first

    # Resume for 10 more steps.
    assert main([*args[:-2], "--resume", str(ckpt), "--max-steps", "40"]) == 0
    assert "resumed at step 30" in capsys.readouterr().out
    assert load_checkpoint(ckpt).step == 40


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--hidden-size", "0"], "expected a positive integer, got 0"),
        (["train", "--cell", "transformer"], "invalid choice: 'transformer'"),
        (["train", "--lr", "-1"], "expected a number in (0.0, inf), got -1"),
        (["train", "--max-steps", "5", "--max-epochs", "1"], "not allowed with argument"),
        (["sample"], "the following arguments are required: CHECKPOINT"),
    ],
)
def test_cli_bad_flags_exit_2(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_cli_plot_without_matplotlib_says_so(tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    assert main(["train", "--plot", str(tmp_path / "p.png"), "--max-steps", "1"]) == 2
    assert "--plot needs matplotlib, which is not installed" in capsys.readouterr().err
    assert not (tmp_path / "p.png").exists()


def test_cli_bad_files_exit_2(tmp_path, capsys):
    assert main(["train", str(tmp_path / "missing.txt")]) == 2
    assert "text file not found" in capsys.readouterr().err
    short = tmp_path / "short.txt"
    short.write_text("abc")
    assert main(["train", str(short)]) == 2
    assert "needs at least 2501 (batch_size × seq_length + 1)" in capsys.readouterr().err
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello \xff world" * 500)
    assert main(["train", str(bad)]) == 2
    assert "bytes" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "none.npz")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_default_corpus_trains_from_the_command_line_defaults(tmp_path, capsys):
    """`rnncore train` with no file uses the shipped tiny-shakespeare (a few steps here)."""
    ckpt = tmp_path / "c.npz"
    assert main(["train", "--max-steps", "2", "--checkpoint", str(ckpt), "--eval-every", "0"]) == 0
    out = capsys.readouterr().out
    assert "1115394 characters, 65 distinct" in out
    assert load_checkpoint(ckpt).config["model"]["vocab_size"] == 65
    assert len(load_corpus().vocab) == 65


def test_cli_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    text = tmp_path / "t.txt"
    text.write_text(TEXT * 5, encoding="utf-8")
    ckpt = tmp_path / "c.npz"
    proc = subprocess.Popen(
        [sys.executable, "-m", "rnncore.cli", "train", str(text), "--hidden-size", "16",
         "--embedding-size", "8", "--seq-length", "10", "--batch-size", "4", "--eval-every",
         "0", "--sample-every", "0", "--log-every", "1", "--max-steps", "1000000",
         "--checkpoint", str(ckpt), "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until it is training
        if line.startswith("step 20/"):
            break
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted at step" in out and "checkpoint saved" in out
    assert load_checkpoint(ckpt).step >= 20


@pytest.mark.parametrize("command", ["train", "sample"])
def test_help_shows_every_default_exactly_once(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    usage, _, body = text.partition("\n\n")
    entries: dict[str, str] = {}  # "--hidden-size HIDDEN_SIZE" -> its help, lines joined
    name = None
    for line in body.splitlines():
        if line.startswith("  ") and not line.startswith("   "):  # an option's first line
            name, _, rest = line.strip().partition("  ")
            entries[name] = rest.strip()
        elif line.startswith("   ") and name is not None:  # its help continues
            entries[name] += " " + line.strip()
        else:  # a heading or a blank line
            name = None
    flags = re.findall(r"\[(--[\w-]+)", usage)
    listed = {word.rstrip(",") for n in entries for word in n.split()}
    assert flags and set(flags) <= listed  # every option has an entry
    for n, help_text in entries.items():
        if n == "-h, --help":
            continue
        expected = 0 if n == "CHECKPOINT" else 1  # required: no default
        assert len(re.findall(r"\bdefault\b", help_text)) == expected, (n, help_text)
    assert "(default: None)" not in text
    if command == "train":
        assert entries["--hidden-size HIDDEN_SIZE"].endswith("(default: 128)")
        assert entries["--lr LR"].endswith("(default: 0.002)")
        assert entries["--batch-size BATCH_SIZE"].endswith("(default: 50)")
        assert entries["TEXT_FILE"].count("default") == 1
    else:
        assert entries["--prime PRIME"] == "text to start from (default: a newline)"
