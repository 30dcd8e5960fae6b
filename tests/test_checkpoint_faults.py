"""rnncore.checkpoint under faults: damaged files (every truncation point, bit flips across the
whole file, a trainer's checkpoint truncated, flipped or foreign), a process SIGKILLed while it
saves, newer and older formats, and NaN never reaching a checkpoint or the optimizer.

(The name says what sets this file apart; it is the test file of rnncore.checkpoint, and
docs/reliability.md cites it by this name.)"""

from __future__ import annotations

import hashlib
import math
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import TEXT, small_config
from rnncore import checkpoint as ck
from rnncore.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from rnncore.data import Corpus
from rnncore.train import TrainConfig, Trainer, TrainingDiverged


def tiny_checkpoint(n: int = 0) -> Checkpoint:
    """A small checkpoint whose every part follows from `n` (so a loaded one can be identified)."""
    rng = np.random.default_rng(n)
    return Checkpoint(
        weights={
            "w": rng.standard_normal((8, 5)).astype(np.float32),
            "b": rng.standard_normal(8),
        },
        optimizer={"type": np.array("adam"), "steps": np.array(n, np.int64)},
        step=n,
        hidden=(rng.standard_normal((1, 2, 8)), rng.standard_normal((1, 2, 8))),
        config={"n": n},
        metrics={"best_val_loss": math.inf},
    )


def assert_same(a: Checkpoint, b: Checkpoint) -> None:
    assert a.step == b.step and a.config == b.config
    for group in ("weights", "optimizer"):
        x, y = getattr(a, group), getattr(b, group)
        assert sorted(x) == sorted(y)
        for k in x:
            assert x[k].dtype == y[k].dtype
            np.testing.assert_array_equal(x[k], y[k])
    for x, y in zip(a.hidden, b.hidden, strict=True):
        np.testing.assert_array_equal(x, y)


def legacy_v1_bytes(path: Path, ckpt: Checkpoint) -> None:
    """Write `ckpt` exactly as rnncore 0.1.0 did (format 1): np.savez of the entries, no digest."""
    entries = ck._entries("test", ckpt)
    entries[ck._MAGIC] = np.array(1, np.int64)
    with open(path, "wb") as f:
        np.savez(f, **entries)


# --- damaged files --------------------------------------------------------------------------------


def test_round_trip_and_the_trailer(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", tiny_checkpoint(3))
    data = path.read_bytes()
    assert data[-79:-64] == b"rnncore-sha256:"
    assert data[-64:].decode() == hashlib.sha256(data[:-64]).hexdigest()
    got = load_checkpoint(path)
    assert got.format_version == ck.FORMAT_VERSION == 2
    assert_same(got, tiny_checkpoint(3))
    # Still an ordinary .npz archive.
    with np.load(path, allow_pickle=False) as npz:
        assert int(npz["rnncore_checkpoint"]) == 2


def test_every_truncation_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path / "c.npz", tiny_checkpoint(1))
    data = path.read_bytes()
    cut = tmp_path / "cut.npz"
    messages = set()
    for n in range(len(data)):  # every length from 0 to one byte short
        cut.write_bytes(data[:n])
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(cut)
        msg = str(e.value)
        assert msg.startswith(f"{cut}: "), msg
        if n == 0:
            assert "the file is empty" in msg
        elif n < 4:
            assert "not an rnncore checkpoint" in msg
        else:
            assert "corrupt or truncated checkpoint" in msg, (n, msg)
        messages.add(msg.split("(")[1][:40])
    assert len(data) > 1000 and len(messages) >= 2  # the zip reader and the digest both speak


def test_a_single_bit_flip_anywhere_is_a_clear_error(tmp_path):
    """Every byte of the file, one seeded bit in each: data, .npy headers, zip headers, the
    central directory, the end record, the digest itself."""
    path = save_checkpoint(tmp_path / "c.npz", tiny_checkpoint(2))
    data = path.read_bytes()
    flip = tmp_path / "flip.npz"
    bits = random.Random(20261201)
    for offset in range(len(data)):
        damaged = bytearray(data)
        damaged[offset] ^= 1 << bits.randrange(8)
        flip.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(flip)
        msg = str(e.value)
        assert msg.startswith(f"{flip}: "), (offset, msg)
        assert "corrupt or truncated checkpoint" in msg or "not an rnncore checkpoint" in msg, (
            offset,
            msg,
        )
        if 4 <= offset < len(data) - 79:  # the digest covers it: the mismatch is what is said
            assert "SHA-256 does not match" in msg, (offset, msg)


def test_a_damaged_trainer_checkpoint_never_loads(tmp_path):
    cfg = TrainConfig(hidden_size=16, num_layers=2, embedding_size=8, seq_length=10,
                      batch_size=4, max_steps=3, seed=3)  # fmt: skip
    t = Trainer(Corpus.from_text(TEXT), cfg)
    t.run()
    path = t.save(tmp_path / "t.npz")
    data = path.read_bytes()
    bad = tmp_path / "bad.npz"
    rng = random.Random(7)
    for offset in [4, 40, len(data) // 2, len(data) - 80, len(data) - 1] + [
        rng.randrange(len(data)) for _ in range(40)
    ]:
        damaged = bytearray(data)
        damaged[offset] ^= 1 << rng.randrange(8)
        bad.write_bytes(bytes(damaged))
        with pytest.raises(CheckpointError, match=rf"^{bad}: corrupt or truncated checkpoint"):
            Trainer.resume(bad, Corpus.from_text(TEXT))
    for n in (5, 100, len(data) // 3, len(data) - 79, len(data) - 1):
        bad.write_bytes(data[:n])
        with pytest.raises(CheckpointError, match=rf"^{bad}: corrupt or truncated checkpoint"):
            load_checkpoint(bad)


def test_corrupt_checkpoints_give_clear_errors(tmp_path):
    t = Trainer(Corpus.from_text(TEXT), small_config(max_steps=2))
    t.run()
    path = t.save(tmp_path / "c.npz")
    data = path.read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"trunc\.npz: corrupt or truncated"):
        load_checkpoint(tmp_path / "trunc.npz")
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0x40
    (tmp_path / "flip.npz").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=r"flip\.npz"):
        load_checkpoint(tmp_path / "flip.npz")
    (tmp_path / "foreign.npz").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"foreign\.npz: not an rnncore checkpoint"):
        load_checkpoint(tmp_path / "foreign.npz")


def test_a_newer_format_says_so(tmp_path):
    entries = ck._entries("test", tiny_checkpoint(0))
    entries[ck._MAGIC] = np.array(ck.FORMAT_VERSION + 1, np.int64)
    path = tmp_path / "new.npz"
    path.write_bytes(ck._encode(entries))
    with pytest.raises(
        CheckpointError,
        match=rf"^{path}: written by a newer rnncore \(format 3 > 2\); upgrade rnncore to load it$",
    ):
        load_checkpoint(path)
    # Without our digest too: a newer format may protect itself otherwise.
    with open(path, "wb") as f:
        np.savez(f, **entries)
    with pytest.raises(CheckpointError, match=r"newer rnncore \(format 3 > 2\)"):
        load_checkpoint(path)


def test_format_1_files_still_load_and_their_damage_is_caught(tmp_path):
    path = tmp_path / "v1.npz"
    legacy_v1_bytes(path, tiny_checkpoint(5))
    got = load_checkpoint(path)
    assert got.format_version == 1
    assert_same(got, tiny_checkpoint(5))
    data = path.read_bytes()
    assert b"rnncore-sha256:" not in data
    for n in (10, len(data) // 2, len(data) - 1):
        (tmp_path / "cut.npz").write_bytes(data[:n])
        with pytest.raises(CheckpointError, match=r"cut\.npz: corrupt or truncated checkpoint"):
            load_checkpoint(tmp_path / "cut.npz")
    # A format-2 file whose digest was stripped is not taken for a format-1 file.
    v2 = save_checkpoint(tmp_path / "v2.npz", tiny_checkpoint(5)).read_bytes()
    stripped = bytearray(v2[:-79])
    stripped[-2:] = b"\0\0"  # an archive without a comment, otherwise intact
    (tmp_path / "stripped.npz").write_bytes(bytes(stripped))
    with pytest.raises(
        CheckpointError,
        match=r"stripped\.npz: corrupt or truncated checkpoint \(format 2 files end with 79 bytes "
        r"rnncore-sha256:<SHA-256>, this one does not",
    ):
        load_checkpoint(tmp_path / "stripped.npz")


# --- non-finite values never reach a checkpoint ---------------------------------------------------


def bad_size(c: Checkpoint, key: str) -> int:
    group, _, name = key.partition("/")
    if group == "hidden":
        return c.hidden[int(name)].size
    return getattr(c, group)[name].size


@pytest.mark.parametrize(
    ("part", "key"),
    [("weights", "weights/b"), ("optimizer", "optimizer/exp_avg/w"), ("hidden", "hidden/1")],
)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_save_refuses_non_finite_values_and_leaves_the_old_file(tmp_path, part, key, value):
    path = save_checkpoint(tmp_path / "c.npz", tiny_checkpoint(0))
    before = path.read_bytes()
    bad = tiny_checkpoint(1)
    if part == "weights":
        bad.weights["b"][3] = value
        index = "(3,)"
    elif part == "optimizer":
        bad.optimizer["exp_avg/w"] = np.zeros((8, 5), np.float32)
        bad.optimizer["exp_avg/w"][2, 4] = value
        index = "(2, 4)"
    else:
        bad.hidden[1][0, 1, 7] = value
        index = "(0, 1, 7)"
    msg = (
        f"save_checkpoint: refusing to write {path}: {key} holds 1 non-finite value(s) of "
        f"{bad_size(bad, key)} (the first, {value}, at index {index}); expected finite values only"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(msg)}$"):
        save_checkpoint(path, bad)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]  # no temporary file left


def test_load_refuses_non_finite_weights_written_by_other_means(tmp_path):
    bad = tiny_checkpoint(1)
    bad.weights["w"][0, 0] = np.nan
    path = tmp_path / "nan.npz"
    legacy_v1_bytes(path, bad)  # the 0.1.0 writer did not check
    with pytest.raises(
        CheckpointError,
        match=rf"^{path}: unusable checkpoint \(weights/w holds 1 non-finite value\(s\) of 40",
    ):
        load_checkpoint(path)


def test_trainer_skips_non_finite_gradients_before_the_optimizer(tmp_path):
    """NaN gradients (finite weights): the step is dropped before clipping and the update, so
    neither the parameters nor the optimizer's state change; 'stop' raises at once, 'skip'
    after 10 in a row; every checkpoint written stays finite and loads."""
    cfg = TrainConfig(hidden_size=16, num_layers=1, embedding_size=8, seq_length=10,
                      batch_size=4, max_steps=50, seed=3)  # fmt: skip
    t = Trainer(Corpus.from_text(TEXT), cfg)
    t.run(max_steps=2)
    poison = {"left": 0}
    real = t.model.train_step

    def train_step(x, y, state=None):
        loss, final = real(x, y, state)
        if poison["left"]:
            poison["left"] -= 1
            t.model.params.grad[7] = np.nan
        return loss, final

    t.model.train_step = train_step
    params = t.model.params.data.copy()
    opt = {k: v.copy() for k, v in t.optimizer.state_dict().items()}
    poison["left"] = 3
    for _ in range(3):
        info = t.train_step()
        assert info.skipped and math.isnan(info.grad_norm) and t.step == 2
    np.testing.assert_array_equal(t.model.params.data, params)
    for k, v in t.optimizer.state_dict().items():
        np.testing.assert_array_equal(v, opt[k])
    info = t.train_step()  # clean again: training goes on
    assert not info.skipped and t.step == 3
    assert np.isfinite(t.model.params.data).all()
    assert not np.array_equal(t.model.params.data, params)
    path = t.save(tmp_path / "after.npz")
    assert load_checkpoint(path).step == 3

    poison["left"] = 10
    for _ in range(9):
        assert t.train_step().skipped
    with pytest.raises(TrainingDiverged, match=r"step 4: .*not finite.*\(10 steps in a row\)"):
        t.train_step()
    assert t.step == 3 and np.isfinite(t.model.params.data).all()

    stop = Trainer(Corpus.from_text(TEXT), TrainConfig(**{**cfg.to_dict(), "nonfinite": "stop"}))
    stop.model.train_step = lambda x, y, state=None: (math.nan, None)  # a NaN loss
    before = stop.model.params.data.copy()
    with pytest.raises(TrainingDiverged, match=r"step 1: the loss or the gradients are not finite"):
        stop.train_step()
    np.testing.assert_array_equal(stop.model.params.data, before)
    assert stop.optimizer.steps == 0


def test_trainer_save_refuses_hand_set_nan_weights(tmp_path):
    cfg = TrainConfig(hidden_size=8, num_layers=1, embedding_size=4, seq_length=5,
                      batch_size=2, max_steps=2, seed=1)  # fmt: skip
    t = Trainer(Corpus.from_text(TEXT), cfg)
    t.model.params.params["decoder.bias"][1] = np.nan
    out = tmp_path / "x.npz"
    with pytest.raises(
        TrainingDiverged,
        match=rf"Trainer.save: refusing to save non-finite weights to {out}: 'decoder.bias' holds 1",
    ):
        t.save(out)
    assert not out.exists()


# --- SIGKILL while saving -------------------------------------------------------------------------

# A fork server: imports once, then for each "round K" line forks a child that saves versions
# K, K+1, ... to the same path as fast as it can, printing "saved N" after each save returns.
# The test SIGKILLs the child at a random moment; the server reaps it and prints "dead".
SERVER = r"""
import os, sys
import numpy as np
from rnncore.checkpoint import Checkpoint, save_checkpoint

path = sys.argv[1]

def version(n):
    rng = np.random.default_rng(n)
    return Checkpoint(
        weights={"w": rng.standard_normal((96, 96)).astype(np.float32), "b": rng.standard_normal(96)},
        optimizer={"type": np.array("adam"), "steps": np.array(n, np.int64)},
        step=n, config={"n": n})

save_checkpoint(path, version(0))
print("ready", flush=True)
for line in sys.stdin:
    k = int(line.split()[1])
    pid = os.fork()
    if pid == 0:
        for n in range(k, k + 100000):
            save_checkpoint(path, version(n))
            os.write(1, b"saved %d\n" % n)
        os._exit(0)
    print("pid", pid, flush=True)
    _, status = os.waitpid(pid, 0)
    print("dead", os.WTERMSIG(status) if os.WIFSIGNALED(status) else -1, flush=True)
"""


class Lines:
    """Lines from a pipe, each waited for at most `timeout` seconds."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buf = fd, b""

    def next(self, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise TimeoutError(f"no line from the checkpoint writer in {timeout} s")
            chunk = os.read(self.fd, 65536)
            if not chunk:
                raise EOFError("the checkpoint writer exited")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()


def expected_version(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(n)
    return {"w": rng.standard_normal((96, 96)).astype(np.float32), "b": rng.standard_normal(96)}


def test_sigkill_while_saving_never_loses_or_damages_a_checkpoint(tmp_path):
    # At least 40 kills, at least 10 of them inside a save (between the temporary file and the
    # rename: the window that matters) and 10 after a newer version was written. Where a kill
    # lands depends on the machine's speed (a fork under ASan is slow, for one), so the test
    # goes on until all three hold.
    min_kills, min_inside, max_kills = 40, 10, 400
    kills, path = 0, tmp_path / "live.npz"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        text=False,
    )
    lines = Lines(server.stdout.fileno())
    delays = random.Random(20261201)
    lost, inside_save, advanced, acked, log = 0, 0, 0, 0, []
    try:
        assert lines.next(60) == "ready"
        while kills < min_kills or min(inside_save, advanced) < min_inside:
            if kills >= max_kills:
                break
            kills += 1
            server.stdin.write(f"round {acked + 1}\n".encode())
            server.stdin.flush()
            pid = int(lines.next().split()[1])
            time.sleep(delays.uniform(0.002, 0.04))
            os.kill(pid, signal.SIGKILL)
            last = acked
            while (line := lines.next()).startswith("saved "):
                last = int(line.split()[1])
            assert line == f"dead {int(signal.SIGKILL)}", line
            # The file must be the last acknowledged version or the one after it (saved, then
            # killed before it could say so), complete and exactly as written.
            try:
                got = load_checkpoint(path)
                ok = last <= got.step <= last + 1 and got.config == {"n": got.step}
                want = expected_version(got.step)
                ok = ok and all(np.array_equal(got.weights[k], want[k]) for k in want)
            except (CheckpointError, FileNotFoundError) as e:
                got, ok = None, False
                log.append(f"load failed after acked {last}: {e}")
            if not ok:
                lost += 1
                log.append(f"acked {last}, file holds {None if got is None else got.step}")
                break
            advanced += got.step > acked
            acked = got.step
            leftovers = list(tmp_path.glob(".live.npz.*.tmp"))
            inside_save += bool(leftovers)  # killed between the temporary file and the rename
            for p in leftovers:
                p.unlink()
    finally:
        server.kill()
        server.wait()
        server.stdin.close()
        server.stdout.close()
    print(
        f"\nSIGKILL during checkpoint saves: {kills} kills, {lost} checkpoints lost or damaged, "
        f"{inside_save} kills inside a save (temporary file left behind), {advanced} rounds "
        f"with a newer version, {acked} versions written"
    )
    assert lost == 0, log
    # The kills must hit the interesting window (mid-write): otherwise the test proves nothing.
    assert inside_save >= min_inside, f"only {inside_save} of {kills} kills landed inside a save"
    assert advanced >= min_inside, f"only {advanced} of {kills} rounds wrote a newer version"


def test_generator_from_state_continues_a_saved_generator_through_json():
    """checkpoint.generator_from_state (public): a layer's generator, saved as JSON, rebuilt."""
    import json

    from rnncore import LSTM

    for bit_generator in (None, np.random.MT19937(5)):
        layer = LSTM(3, 4, seed=1)
        gen = layer.generator if bit_generator is None else np.random.Generator(bit_generator)
        gen.random(7)
        saved = json.loads(json.dumps(gen.bit_generator.state, default=lambda a: a.tolist()))
        expected = gen.random(5)
        assert np.array_equal(ck.generator_from_state(saved).random(5), expected)
    with pytest.raises(ValueError, match="generator_from_state: state must be"):
        ck.generator_from_state({"bit_generator": "Nope"})
    with pytest.raises(ValueError, match="generator_from_state: malformed PCG64 state"):
        ck.generator_from_state({"bit_generator": "PCG64", "state": {}})
