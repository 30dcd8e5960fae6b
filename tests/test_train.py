"""rnncore.train.Trainer: training lowers the loss for each cell, evaluation leaves the training
state alone, exact resume, resume refusing other data, non-finite gradients, and Trainer.fit
(the policy of a whole run: logs, samples, evaluations, checkpoints, metrics, the time limit,
Ctrl-C) driven without the command line."""

from __future__ import annotations

import json
import signal

import numpy as np
import pytest

from conftest import TEXT, UNICODE, num_threads, small_config
from rnncore.checkpoint import load_checkpoint
from rnncore.data import Corpus
from rnncore.model import CharRNN
from rnncore.reporting import Reporter
from rnncore.train import FitResult, Trainer, TrainingDiverged


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_training_lowers_the_loss(cell):
    trainer = Trainer(Corpus.from_text(TEXT), small_config(cell=cell, max_steps=150, lr=1e-2))
    before = trainer.evaluate()
    losses = []
    trainer.run(lambda t, info: losses.append(info.loss))
    after = trainer.evaluate()
    assert len(losses) == 150 and trainer.step == 150
    assert after < before - 1.0, (before, after)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 1.0


def test_validation_does_not_disturb_the_training_state():
    a = Trainer(Corpus.from_text(TEXT), small_config(max_steps=12))
    b = Trainer(Corpus.from_text(TEXT), small_config(max_steps=12))
    for i in range(12):
        a.train_step()
        b.train_step()
        if i % 3 == 0:
            b.evaluate()
    np.testing.assert_array_equal(a.model.params.data, b.model.params.data)


def test_resume_continues_exactly(tmp_path):
    corpus = Corpus.from_text(TEXT)  # 1620 training characters: the data wraps twice
    with num_threads(1):
        straight = Trainer(corpus, small_config(max_steps=100))
        straight.run()
        half = Trainer(corpus, small_config(max_steps=100))
        half.run(max_steps=50)
        half.save(tmp_path / "half.npz")
        resumed = Trainer.resume(tmp_path / "half.npz", corpus)
        assert resumed.step == 50
        resumed.run()
    assert resumed.step == straight.step == 100
    assert resumed.train.epoch == straight.train.epoch >= 2
    np.testing.assert_array_equal(resumed.model.params.data, straight.model.params.data)
    for k in straight.optimizer.state:
        np.testing.assert_array_equal(resumed.optimizer.state[k], straight.optimizer.state[k])


def test_resume_refuses_another_text(tmp_path):
    t = Trainer(Corpus.from_text(TEXT), small_config(max_steps=2))
    t.run()
    t.save(tmp_path / "c.npz")
    with pytest.raises(ValueError, match="vocabulary"):
        Trainer.resume(tmp_path / "c.npz", Corpus.from_text(UNICODE))
    with pytest.raises(ValueError, match="saved for other data"):
        Trainer.resume(tmp_path / "c.npz", Corpus.from_text(TEXT[::-1]))


def test_nonfinite_gradients_are_skipped_or_stop_and_never_saved(tmp_path):
    t = Trainer(Corpus.from_text(TEXT), small_config(max_steps=5))
    t.run(max_steps=2)
    good = t.model.params.data.copy()
    t.model.params.params["decoder.bias"][0] = np.nan
    nan_bias = t.model.params.data.copy()
    info = t.train_step()
    assert info.skipped and t.step == 2  # not applied: the optimizer never saw NaN gradients
    np.testing.assert_array_equal(t.model.params.data, nan_bias)
    with pytest.raises(TrainingDiverged, match="refusing to save non-finite weights"):
        t.save(tmp_path / "bad.npz")
    assert not (tmp_path / "bad.npz").exists()
    stop = Trainer(Corpus.from_text(TEXT), small_config(max_steps=5, nonfinite="stop"))
    stop.model.params.params["decoder.bias"][0] = np.inf
    with pytest.raises(TrainingDiverged, match="not finite"):
        stop.train_step()
    assert np.isfinite(good).all()


# --- Trainer.fit: the policy of a whole run, driven without the command line ----------------------


class Recorder(Reporter):
    """Keeps every event as (name, details)."""

    def __init__(self, on_log=None):
        self.events: list[tuple] = []
        self.on_log = on_log

    def start(self, trainer, total, time_limit):
        self.events.append(("start", total, time_limit))

    def log(self, info, train_loss, val_loss, eta_s):
        self.events.append(("log", info.step, train_loss, val_loss))
        if self.on_log is not None:
            self.on_log(info.step)

    def skipped(self, info):
        self.events.append(("skipped", info.step))

    def sample(self, step, text):
        self.events.append(("sample", step, text))

    def evaluated(self, trainer, val_loss, result):
        self.events.append(("evaluated", trainer.step, val_loss))

    def time_limit(self, step, minutes):
        self.events.append(("time_limit", step, minutes))

    def close(self):
        self.events.append(("close",))

    def end(self, trainer, result):
        self.events.append(("end", result.status))

    def steps(self, name):
        return [e[1] for e in self.events if e[0] == name]


def test_fit_logs_samples_evaluates_saves_and_writes_metrics(tmp_path):
    t = Trainer(Corpus.from_text(TEXT), small_config(max_steps=12))
    rec, ckpt, metrics = Recorder(), tmp_path / "c.npz", tmp_path / "m.jsonl"
    result = t.fit(rec, checkpoint=ckpt, eval_every=5, sample_every=6, sample_length=10,
                   log_every=4, metrics=metrics)  # fmt: skip
    assert isinstance(result, FitResult) and result.status == "done" and result.error is None
    assert result.step == t.step == 12 and result.checkpoint == ckpt
    assert rec.events[0] == ("start", 12, None) and rec.events[-2:] == [("close",), ("end", "done")]
    assert rec.steps("log") == [4, 8, 12] and rec.steps("evaluated") == [5, 10, 12]
    assert rec.steps("sample") == [6, 12]
    samples = [e[2] for e in rec.events if e[0] == "sample"]
    assert samples[-1] == t.sample(10, seed=12)  # seeded with the step, from the final model
    assert all(len(text) == 11 for text in samples)  # TEXT has no newline: a drawn start + 10
    assert [s for s, _ in result.train_curve] == [4, 8, 12]
    assert result.val_curve == [(h["step"], h["val_loss"]) for h in t.history]
    assert [s for s, _ in result.val_curve] == [5, 10, 12]
    assert result.best_val_loss == min(v for _, v in result.val_curve)
    saved = load_checkpoint(ckpt)
    assert saved.step == 12 and saved.metrics["best_val_loss"] == result.best_val_loss
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [(r["step"], "val_loss" in r) for r in rows] == [
        (4, False), (5, True), (8, False), (10, True), (12, False), (12, True)]  # fmt: skip
    assert all(r["train_loss"] is None for r in rows if "val_loss" in r)
    assert rows[0]["train_loss"] == pytest.approx(result.train_curve[0][1])


def test_fit_trains_exactly_as_run():
    """Evaluations, samples and saves leave the training itself alone."""
    with num_threads(1):
        plain = Trainer(Corpus.from_text(TEXT), small_config(max_steps=15))
        plain.run()
        fitted = Trainer(Corpus.from_text(TEXT), small_config(max_steps=15))
        fitted.fit(eval_every=4, sample_every=3, sample_length=5, log_every=2)
    np.testing.assert_array_equal(fitted.model.params.data, plain.model.params.data)


def test_fit_stops_at_the_time_limit_after_evaluating_and_saving(tmp_path):
    t = Trainer(Corpus.from_text(TEXT), small_config(max_steps=10_000))
    rec = Recorder()
    result = t.fit(rec, checkpoint=tmp_path / "c.npz", eval_every=0, time_limit=1e-9)
    assert result.status == "time_limit" and t.step == 1
    assert rec.steps("evaluated") == [1] and ("time_limit", 1, 1e-9) in rec.events
    assert load_checkpoint(tmp_path / "c.npz").step == 1


def test_fit_saves_a_checkpoint_on_keyboard_interrupt(tmp_path):
    def interrupt(step):
        if step == 6:
            raise KeyboardInterrupt

    t = Trainer(Corpus.from_text(TEXT), small_config(max_steps=100))
    rec = Recorder(on_log=interrupt)
    result = t.fit(rec, checkpoint=tmp_path / "c.npz", eval_every=0, log_every=2)
    assert result.status == "interrupted" and result.step == 6
    assert rec.events[-1] == ("end", "interrupted") and rec.steps("evaluated") == []
    assert load_checkpoint(tmp_path / "c.npz").step == 6
    resumed = Trainer.resume(tmp_path / "c.npz", Corpus.from_text(TEXT))
    assert resumed.step == resumed.resumed_at == 6


def test_fit_ctrl_c_finishes_the_step_then_saves_and_restores_the_handler(tmp_path):
    def ctrl_c(step):
        if step == 4:
            signal.raise_signal(signal.SIGINT)  # as the terminal sends it; not raised here

    before = signal.getsignal(signal.SIGINT)
    t = Trainer(Corpus.from_text(TEXT), small_config(max_steps=100))
    rec = Recorder(on_log=ctrl_c)
    result = t.fit(rec, checkpoint=tmp_path / "c.npz", eval_every=0, log_every=1)
    assert result.status == "interrupted" and t.step == 4 and rec.steps("log") == [1, 2, 3, 4]
    assert load_checkpoint(tmp_path / "c.npz").step == 4
    assert signal.getsignal(signal.SIGINT) is before


def test_fit_reports_skipped_steps_and_divergence():
    t = Trainer(Corpus.from_text(TEXT), small_config(max_steps=3))
    t.model.params.params["decoder.bias"][0] = np.nan
    rec = Recorder()
    result = t.fit(rec)  # "skip": ten skipped steps in a row end the run
    assert rec.steps("skipped") == [0] * 9 and t.step == 0
    assert result.status == "diverged" and isinstance(result.error, TrainingDiverged)
    assert "10 steps in a row" in str(result.error) and rec.events[-1] == ("end", "diverged")


def test_fit_checks_its_options():
    t = Trainer(Corpus.from_text(TEXT), small_config(max_steps=3))
    with pytest.raises(ValueError, match=r"Trainer.fit: eval_every must be an int >= 0, got -1"):
        t.fit(eval_every=-1)
    with pytest.raises(ValueError, match=r"Trainer.fit: log_every must be an int >= 1, got 0"):
        t.fit(log_every=0)
    with pytest.raises(ValueError, match=r"Trainer.fit: time_limit must be a finite number > 0"):
        t.fit(time_limit=0)
    assert t.step == 0


def test_the_model_is_built_from_the_config_by_the_model():
    corpus = Corpus.from_text(TEXT)
    config = small_config(cell="gru", dtype="float64")
    t = Trainer(corpus, config)
    model = CharRNN.from_config(config, len(corpus.vocab))  # the same seed: the same weights
    np.testing.assert_array_equal(model.params.data, t.model.params.data)
    again = CharRNN.from_config(t.model.config)  # a checkpoint's model dict: the same shape
    assert again.config == t.model.config and again.dtype == np.float64
    with pytest.raises(TypeError, match="needs vocab_size"):
        CharRNN.from_config(config)
