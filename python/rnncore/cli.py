"""The ``rnncore`` command line: ``rnncore train`` and ``rnncore sample``.

    rnncore train                         # an LSTM 2x128 on the shipped tiny-shakespeare
    rnncore train input.txt --cell gru --max-epochs 10 --checkpoint gru.npz
    rnncore sample checkpoint.npz --prime "ROMEO:" --length 500 --temperature 0.8
    rnncore export checkpoint.npz model.onnx     # needs pip install 'rnncore[onnx]'

Bad flags or files print one clear line and exit with status 2; Ctrl-C during training saves a
checkpoint and exits with status 130.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
from collections.abc import Sequence
from typing import IO, Any

from . import distributed, get_num_threads, onnx_io, set_num_threads
from .checkpoint import load_checkpoint
from .data import ENCODINGS, DataError, load_corpus
from .model import CELLS
from .optim import OPTIMIZERS
from .reporting import ConsoleReporter
from .sample import sample_stream
from .train import TrainConfig, Trainer, model_from_checkpoint

__all__ = ["main"]


class UsageError(Exception):
    """A bad flag, file or value: printed as one line, exit status 2."""


def _int_at_least(low: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected an integer >= {low}, got {text!r}"
            ) from None
        if v < low:
            raise argparse.ArgumentTypeError(
                f"expected {'a positive integer' if low == 1 else f'an integer >= {low}'}, got {v}"
            )
        return v

    return parse


_positive_int, _nonneg_int = _int_at_least(1), _int_at_least(0)


def _number(low: float, high: float = math.inf, *, low_ok: bool = True):
    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (v >= low if low_ok else v > low) or not v < high or not math.isfinite(v):
            rng = f"{'[' if low_ok else '('}{low}, {high})"
            raise argparse.ArgumentTypeError(f"expected a number in {rng}, got {text}")
        return v

    return parse


def _option(group: Any, *names: str, help: str | None = None, **kw: Any) -> None:
    """group.add_argument(...) with the default in the help, exactly once: appended as
    "(default: X)" unless the help already says what the default is ("default: ...").
    An option whose default is None must say it in its help."""
    if "default" not in (help or "") and kw.get("default") is not None:
        help = f"{help} (default: %(default)s)" if help else "default: %(default)s"
    group.add_argument(*names, help=help, **kw)


def build_parser() -> argparse.ArgumentParser:
    """The ``rnncore`` parser; every option's help shows its default once."""
    parser = argparse.ArgumentParser(
        prog="rnncore", description="Train character-level language models and sample from them."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{train,sample,export}")

    t = sub.add_parser(
        "train",
        help="train a char-rnn on a text file",
        description="Train a character-level RNN/LSTM/GRU on a text file (default: the "
        "tiny-shakespeare copy shipped with rnncore) with truncated BPTT.",
    )
    _option(
        t,
        "text_file",
        nargs="?",
        metavar="TEXT_FILE",
        help="UTF-8 text to train on (default: the shipped tiny-shakespeare)",
    )
    _option(
        t,
        "--encoding",
        choices=ENCODINGS,
        default="utf-8",
        help="utf-8: characters; bytes: every byte of any file is a token",
    )
    m = t.add_argument_group("model")
    _option(m, "--cell", choices=CELLS, default="lstm", help="the recurrent cell")
    _option(m, "--hidden-size", type=_positive_int, default=128, help="units per layer")
    _option(m, "--num-layers", type=_positive_int, default=2, help="stacked layers")
    _option(m, "--embedding-size", type=_nonneg_int, default=64, help="0: one-hot input")
    _option(
        m,
        "--dropout",
        type=_number(0.0, 1.0),
        default=0.0,
        help="between layers and on the top layer's output",
    )
    _option(m, "--dtype", choices=("float32", "float64"), default="float32")
    o = t.add_argument_group("optimization")
    _option(o, "--seq-length", type=_positive_int, default=50, help="time steps per batch")
    _option(o, "--batch-size", type=_positive_int, default=50, help="streams per batch")
    _option(o, "--optimizer", choices=tuple(OPTIMIZERS), default="adam")
    _option(o, "--lr", type=_number(0.0, low_ok=False), default=2e-3, help="learning rate")
    _option(
        o,
        "--lr-decay",
        choices=("none", "step", "cosine"),
        default="none",
        help="step: x --lr-decay-factor every --lr-decay-every steps; cosine: to "
        "--min-lr over --max-steps",
    )
    _option(o, "--lr-decay-factor", type=_number(0.0, 1.0 + 1e-12, low_ok=False), default=0.5)
    _option(o, "--lr-decay-every", type=_positive_int, default=1000, help="steps")
    _option(o, "--min-lr", type=_number(0.0), default=0.0, help="the end of the cosine decay")
    _option(o, "--grad-clip", type=_number(0.0), default=5.0, help="0: no clipping")
    _option(
        o,
        "--clip-mode",
        choices=("value", "norm"),
        default="value",
        help="value: clamp each gradient (char-rnn); norm: the global L2 norm",
    )
    _option(
        o,
        "--on-nonfinite",
        dest="nonfinite",
        choices=("skip", "stop"),
        default="skip",
        help="a step with NaN/inf gradients: skip it, or stop the run",
    )
    _option(
        o,
        "--val-fraction",
        type=_number(0.0, 1.0),
        default=0.05,
        help="the tail of the text held out for validation",
    )
    length = o.add_mutually_exclusive_group()
    _option(
        length,
        "--max-steps",
        type=_positive_int,
        help="default: 1 epoch, or until --time-limit when that is given",
    )
    _option(
        length,
        "--max-epochs",
        type=_number(0.0, low_ok=False),
        help="passes over the text (default: see --max-steps)",
    )
    _option(
        o,
        "--time-limit",
        type=_number(0.0, low_ok=False),
        metavar="MINUTES",
        help="also stop after this many minutes, then evaluate and save (default: no limit)",
    )
    r = t.add_argument_group("output")
    _option(
        r,
        "--eval-every",
        type=_nonneg_int,
        default=200,
        help="steps between validation runs (and checkpoints); 0: only at the end",
    )
    _option(
        r,
        "--sample-every",
        type=_nonneg_int,
        default=1000,
        help="steps between printed samples; 0: never",
    )
    _option(r, "--sample-length", type=_positive_int, default=200, help="characters")
    _option(
        r,
        "--checkpoint",
        default="checkpoint.npz",
        metavar="PATH",
        help="written at every evaluation, at the end and on Ctrl-C",
    )
    _option(
        r,
        "--resume",
        metavar="PATH",
        help="continue the run saved in this checkpoint (default: a new run)",
    )
    _option(
        r, "--metrics", metavar="PATH", help="append JSON lines of metrics here (default: none)"
    )
    _option(
        r,
        "--plot",
        metavar="PNG",
        help="write a plot of train and val loss, needs matplotlib (default: no plot)",
    )
    _option(
        r,
        "--log-every",
        type=_positive_int,
        default=10,
        help="steps between log lines and metrics records",
    )
    _option(r, "--seed", type=_nonneg_int, default=0, help="weights and dropout masks")
    _option(r, "--threads", type=_positive_int, help="default: OMP_NUM_THREADS or all cores")
    _option(
        r,
        "--no-progress",
        action="store_true",
        help="plain log lines even on a terminal (default: a progress bar on a terminal)",
    )

    s = sub.add_parser(
        "sample",
        help="generate text from a checkpoint",
        description="Generate text from a model saved by `rnncore train`; the text streams to "
        "standard output as it is generated.",
    )
    s.add_argument("checkpoint", metavar="CHECKPOINT", help="a file saved by rnncore train")
    _option(s, "--prime", help="text to start from (default: a newline)")
    _option(s, "--length", type=_nonneg_int, default=2000, help="characters to generate")
    _option(
        s,
        "--temperature",
        type=_number(0.0, low_ok=False),
        default=1.0,
        help="below 1: more likely characters; above 1: more varied",
    )
    _option(s, "--top-k", type=_nonneg_int, default=0, help="0: the whole vocabulary")
    _option(
        s,
        "--greedy",
        action="store_true",
        help="always the most likely character (default: sample)",
    )
    _option(s, "--seed", type=_nonneg_int, help="default: fresh entropy")
    _option(s, "--threads", type=_positive_int, default=1)

    e = sub.add_parser(
        "export",
        help="write a checkpoint's model as an ONNX file",
        description="Write the model of a checkpoint as ONNX (token ids and initial states in, "
        "logits and final states out; docs/interop.md). Needs pip install 'rnncore[onnx]'.",
    )
    e.add_argument("checkpoint", metavar="CHECKPOINT", help="a file saved by rnncore train")
    e.add_argument("output", metavar="OUT.onnx", help="the ONNX file to write")
    _option(e, "--opset", type=_int_at_least(14), help="ai.onnx opset (default: 14)")
    from . import gradients_report, inspection  # their options and bodies live there

    gradients_report.add_parser(sub)  # rnncore gradients
    inspection.add_parser(sub)  # rnncore inspect
    sub.metavar = "{" + ",".join(sub.choices) + "}"
    return parser


# --- train --------------------------------------------------------------------------------------

EXIT_STATUS = {"done": 0, "time_limit": 0, "diverged": 1, "interrupted": 130}


def _train(args: argparse.Namespace, out: IO[str]) -> int:
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise UsageError(
            "--plot needs matplotlib, which is not installed: pip install matplotlib "
            "(or pip install 'rnncore[plot]')"
        )
    try:  # under mpiexec with N > 1 ranks: data-parallel (docs/distributed.md)
        dist = distributed.from_environment()
    except (ImportError, RuntimeError) as e:
        raise UsageError(str(e)) from None
    if dist is None:
        return _train_on(args, out, None)
    with dist.abort_on_error(expected=(UsageError,)):  # no rank left waiting for another
        threads = args.threads or dist.default_threads()
        distributed.limit_blas_threads(threads)  # NumPy's own BLAS: no extra spinning threads
        set_num_threads(threads)
        ranks = dist.rank_map()  # collective: every rank
        if dist.is_root:
            print(
                f"rnncore train: {dist.size} MPI ranks x {get_num_threads()} threads ({ranks})",
                file=out,
            )
        return _train_on(args, out, dist.comm)


def _train_on(args: argparse.Namespace, out: IO[str], comm: Any) -> int:
    if args.threads:
        set_num_threads(args.threads)
    try:
        corpus = load_corpus(args.text_file, encoding=args.encoding)
    except (OSError, DataError) as e:
        raise UsageError(str(e)) from None
    max_steps, max_epochs = args.max_steps, args.max_epochs
    try:
        if args.resume:
            overrides: dict[str, Any] = {"nonfinite": args.nonfinite}
            if max_steps is not None or max_epochs is not None:
                overrides |= {"max_steps": max_steps, "max_epochs": max_epochs}
            trainer = Trainer.resume(args.resume, corpus, comm=comm, **overrides)
        else:
            # The flags carry TrainConfig's field names; from_dict keeps just those.
            config = TrainConfig.from_dict(vars(args))
            if config.max_steps is None and config.max_epochs is None and not args.time_limit:
                config.max_epochs = 1.0  # a bounded default: one pass over the text
            trainer = Trainer(corpus, config, comm=comm)
    except (ValueError, FileNotFoundError) as e:  # DataError and CheckpointError included
        raise UsageError(str(e)) from None
    reporter = ConsoleReporter(out, tty=out.isatty() and not args.no_progress, plot=args.plot)
    result = trainer.fit(
        reporter,
        checkpoint=args.checkpoint,
        eval_every=args.eval_every,
        sample_every=args.sample_every,
        sample_length=args.sample_length,
        log_every=args.log_every,
        time_limit=args.time_limit,
        metrics=args.metrics,
    )
    return EXIT_STATUS[result.status]


def _as_text(piece: str | bytes) -> str:
    return piece if isinstance(piece, str) else piece.decode("utf-8", "replace")


# --- sample -------------------------------------------------------------------------------------


def _sample(args: argparse.Namespace, out: IO[str]) -> int:
    set_num_threads(args.threads)
    try:
        ckpt = load_checkpoint(args.checkpoint)
        if ckpt.vocab is None:
            raise UsageError(f"{args.checkpoint}: the checkpoint has no vocabulary")
        model = model_from_checkpoint(ckpt)
        stream = sample_stream(
            model,
            ckpt.vocab,
            prime=args.prime,
            length=args.length,
            temperature=args.temperature,
            top_k=args.top_k,
            greedy=args.greedy,
            seed=args.seed,
        )
        binary = ckpt.vocab.encoding == "bytes"
        for piece in stream:
            if binary and hasattr(out, "buffer"):
                out.flush()
                out.buffer.write(piece)
                out.buffer.flush()
            else:
                out.write(_as_text(piece))
                out.flush()
    except (ValueError, FileNotFoundError, IsADirectoryError) as e:  # CheckpointError included
        raise UsageError(str(e)) from None
    out.write("\n")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)  # exits with status 2 on a bad flag
    out = sys.stdout
    try:
        if hasattr(args, "run"):  # a subcommand whose body lives in its own module
            return args.run(args, out)
        if args.command == "train":
            return _train(args, out)
        if args.command == "export":
            try:
                written = onnx_io.export_checkpoint(args.checkpoint, args.output, opset=args.opset)
                print(f"rnncore export: wrote {written}", file=out)
            except (ImportError, ValueError, OSError) as e:  # CheckpointError included
                raise UsageError(str(e)) from None
            return 0
        return _sample(args, out)
    except UsageError as e:
        sys.stdout.flush()
        print(f"rnncore {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `rnncore sample ... | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
