// The step streams of the wavefront schedule (common/stream.h) as Python objects, and how a
// cell's binding takes one: _core._StepStream(rows, mask=None) holds a (T,B,W) buffer that one
// kernel call writes step by step while another, on another thread, reads it.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <memory>
#include <string>

#include "bindings/sequence.h"
#include "common/stream.h"

namespace rnncore::bindings {

namespace py = pybind11;

struct PyStepStream {
  StepStream s;
  py::array rows, mask;  // kept alive while a call uses them
};

// The StepStream behind a stream_in / stream_out argument (nullptr for None), checked: rows of
// `dtype` and shape (T, B, W). A stream with lengths, reverse or one-hot rows is refused by the
// caller, which knows which of them apply.
StepStream *stream_arg(const std::string &fn, const char *name, py::handle obj,
                       const py::dtype &dtype, std::ptrdiff_t T, std::ptrdiff_t B,
                       std::ptrdiff_t W);

// The StepStream of obj if it is a _StepStream, else nullptr (unchecked: for failing it).
inline StepStream *raw_stream(py::handle obj) {
  return py::isinstance<PyStepStream>(obj) ? &obj.cast<PyStepStream &>().s : nullptr;
}

// stream_out, checked as stream_arg and also: not stream_in itself, and fresh (nothing
// published yet: a stream carries one call's rows).
inline StepStream *stream_out_arg(const std::string &fn, py::handle obj, const py::dtype &dtype,
                                  std::ptrdiff_t T, std::ptrdiff_t B, std::ptrdiff_t W,
                                  const StepStream *in) {
  StepStream *out = stream_arg(fn, "stream_out", obj, dtype, T, B, W);
  if (out && out == in) throw py::value_error(fn + ": stream_out must not be stream_in");
  if (out && out->done.load() != 0)
    throw py::value_error(fn + ": stream_out must be a new _StepStream, got one with " +
                          std::to_string(out->done.load()) + " steps published already");
  return out;
}

// A forward's streams, checked: stream_in's rows must be x itself (dense, (T,B,D)), stream_out's
// (T,B,H); either needs every length T and no reverse.
struct ForwardStreams {
  StepStream *in, *out;
};
template <typename T>
ForwardStreams forward_streams(const std::string &fn, py::handle stream_in, py::handle stream_out,
                               const SeqArgs<T> &a) {
  const py::dtype dt = py::dtype::of<T>();
  StepStream *in = stream_arg(fn, "stream_in", stream_in, dt, a.T, a.B, a.D);
  StepStream *out = stream_out_arg(fn, stream_out, dt, a.T, a.B, a.H, in);
  if ((in || out) && (a.has_lengths || a.reverse))
    throw py::value_error(fn +
                          ": stream_in / stream_out need every length T and reverse=False, "
                          "got " +
                          (a.reverse ? std::string("reverse=True") : std::string("lengths < T")));
  if (in && (a.one_hot || a.x.data() != in->data<T>()))
    throw py::value_error(fn + ": with stream_in, x must be stream_in.rows itself");
  return {in, out};
}

// A backward's streams, checked: stream_in's rows must be dy itself ((T,B,H)), stream_out's
// (T,B,D), which needs dense x; either needs a forward without lengths.
struct BackwardStreams {
  StepStream *in, *out;
};
template <typename T>
BackwardStreams backward_streams(const std::string &fn, py::handle stream_in, py::handle stream_out,
                                 const SeqCache &c, const T *dy) {
  const py::dtype dt = py::dtype::of<T>();
  StepStream *in = stream_arg(fn, "stream_in", stream_in, dt, c.T, c.B, c.H);
  StepStream *out = stream_out_arg(fn, stream_out, dt, c.T, c.B, c.D, in);
  if ((in || out) && c.sizes().order)
    throw py::value_error(fn +
                          ": stream_in / stream_out need a forward with every length T "
                          "and reverse=False, got one with " +
                          (c.order.reverse ? std::string("reverse=True") : std::string("lengths")));
  if (in && dy != in->data<T>())
    throw py::value_error(fn + ": with stream_in, dy must be stream_in.rows itself");
  if (out && c.one_hot)
    throw py::value_error(fn + ": stream_out needs dense x (token ids have no dx)");
  return {in, out};
}

// A producer's body: run f(); if it throws, mark `out` failed first (its consumer then stops
// waiting and raises too).
template <typename F>
auto producing(StepStream *out, F &&f) -> decltype(f()) {
  try {
    return f();
  } catch (...) {
    if (out) out->fail();
    throw;
  }
}

// After a consumer's compute: raise if its producer failed (what it read is not valid).
void check_stream_in(const std::string &fn, const StepStream *in);

void bind_stream(py::module_ &m);

}  // namespace rnncore::bindings
