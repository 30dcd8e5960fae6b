"""rnncore.train.Trainer: training lowers the loss for each cell, evaluation leaves the training
state alone, exact resume, resume refusing other data, and non-finite gradients."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import TEXT, UNICODE, num_threads, small_config
from rnncore.data import Corpus
from rnncore.train import Trainer, TrainingDiverged


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
