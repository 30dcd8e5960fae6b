// The LSTM's bindings: lstm_forward, lstm_backward and the cache class.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <memory>
#include <string>

#include "bindings/arrays.h"
#include "bindings/bindings.h"
#include "bindings/sequence.h"
#include "bindings/stream.h"
#include "bindings/validate.h"
#include "cells/lstm.h"

namespace rnncore::bindings {

namespace {

struct LstmCache : SeqCache {};

template <typename T>
py::tuple lstm_forward_impl(const SeqArgs<T> &a, DType dt, bool training, StepStream *in_s,
                            StepStream *out_s) {
  auto y = new_array<T>({a.T, a.B, a.H});
  auto h_n = new_array<T>({a.B, a.H});
  auto c_n = new_array<T>({a.B, a.H});
  // Inference keeps nothing: the same workspace lives only for this call.
  auto c = new_cache<LstmCache, LstmWorkspace<T>>(a, dt);
  const SeqSizes nl = c->sizes();  // with the packed layout of lengths
  {
    T *yp = y.mutable_data(), *hnp = h_n.mutable_data(), *cnp = c_n.mutable_data();
    SeqInputs<T> in = inputs_of(a);
    in.x_later = in_s != nullptr;
    ComputeScope nogil;
    const auto ws = c->template workspace<LstmWorkspace<T>>();
    ws.prepare(in, nl);
    LstmForwardArgs<T> args = ws.forward_args(nl);
    args.stream_in = in_s, args.stream_out = out_s;
    lstm_forward<T>(args);
    if (in_s)  // every row is published now: the cache's copy of x, for the backward
      std::memcpy(ws.seq.x, in.x, static_cast<std::size_t>(nl.TB()) * nl.D * sizeof(T));
    ws.read_outputs(yp, hnp, cnp, nl);
    if (out_s) out_s->relay(static_cast<int>(a.T), in_s);  // also where the kernel had no step
  }
  check_stream_in("lstm_forward", in_s);
  py::object cache = training ? py::cast(std::move(c)) : py::none();
  return py::make_tuple(y, h_n, c_n, cache);
}

py::tuple lstm_forward_py(py::handle x, py::handle h0, py::handle c0, py::handle w_ih,
                          py::handle w_hh, py::handle b_ih, py::handle b_hh, py::handle lengths,
                          py::handle reverse_, py::handle training_, py::handle stream_in,
                          py::handle stream_out) {
  const std::string fn = "lstm_forward";
  return producing(raw_stream(stream_out), [&] {
    const bool training = flag(fn, training_, "training");
    const bool reverse = reverse_arg(fn, reverse_);
    const DType dt = dtype_from(fn, w_ih, "w_ih");
    Dims d(fn, 4);
    return dispatch(dt, [&](auto zero) {
      using T = decltype(zero);
      auto a = take_seq_args<T>(d, dt, 4, x, h0, c0, w_ih, w_hh, b_ih, b_hh, true, training,
                                lengths, reverse);
      const ForwardStreams st = forward_streams<T>(fn, stream_in, stream_out, a);
      return lstm_forward_impl<T>(a, dt, training, st.in, st.out);
    });
  });
}

template <typename T>
py::tuple lstm_backward_impl(const LstmCache &c, py::handle dy_, py::handle dh_n_, py::handle dc_n_,
                             py::handle stream_in, py::handle stream_out) {
  const std::string fn = "lstm_backward";
  Dims d = cache_dims("lstm_backward", c);
  py::object dy = take_grad<T>(d, c, dy_, "dy", "TBH");
  py::object dh_n = take_grad<T>(d, c, dh_n_, "dh_n", "BH");
  py::object dc_n = take_grad<T>(d, c, dc_n_, "dc_n", "BH");
  const SeqSizes n = c.sizes();
  const BackwardStreams st = backward_streams<T>(fn, stream_in, stream_out, c, ptr_or_null<T>(dy));
  const idx H4 = 4 * c.H;
  T *dxp = nullptr;
  py::object dx = st.out ? py::object(py::none()) : new_dx<T>(c, &dxp);
  auto dh0 = new_array<T>({c.B, c.H});
  auto dc0 = new_array<T>({c.B, c.H});
  auto dw_ih = new_array<T>({H4, c.D});
  auto dw_hh = new_array<T>({H4, c.H});
  auto db = new_array<T>({H4});
  auto scratch = carve_block<LstmScratch<T>>(n, c.one_hot);
  const GradOrder<T> order(n, c.one_hot);  // lengths: the packed side of the gradients
  const T *dyp = ptr_or_null<T>(dy), *dhnp = ptr_or_null<T>(dh_n), *dcnp = ptr_or_null<T>(dc_n);
  T *dh0p = dh0.mutable_data(), *dc0p = dc0.mutable_data();
  const LstmBackwardArgs<T> args{{order.out(dxp, 0), order.out(dh0p, 1), order.out(dc0p, 2),
                                  dw_ih.mutable_data(), dw_hh.mutable_data(), db.mutable_data()},
                                 order.in(dyp, 0),
                                 order.in(dhnp, 1),
                                 order.in(dcnp, 2),
                                 c.workspace<LstmWorkspace<T>>(),
                                 scratch.at,
                                 n,
                                 st.in,
                                 st.out};
  {
    ComputeScope nogil;
    order.pack(dyp, dhnp, dcnp);
    lstm_backward<T>(args);
    order.unpack(dxp, dh0p, dc0p);
    if (st.out) st.out->relay(static_cast<int>(c.T), st.in);  // also where the kernel had no step
  }
  check_stream_in(fn, st.in);
  auto [db_ih, db_hh] = split_bias_grad<T>(c, db);
  return py::make_tuple(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh);
}

py::tuple lstm_backward_py(py::handle dy, py::handle dh_n, py::handle dc_n, py::handle cache,
                           py::handle stream_in, py::handle stream_out) {
  return producing(raw_stream(stream_out), [&] {
    const auto &c = cache_arg<LstmCache>(cache, "lstm_backward", "LSTMCache", "lstm_forward");
    return dispatch(c.dtype, [&](auto zero) {
      return lstm_backward_impl<decltype(zero)>(c, dy, dh_n, dc_n, stream_in, stream_out);
    });
  });
}

const char *kLstmForwardDoc = R"doc(LSTM forward over a whole sequence (PyTorch's nn.LSTM).

    i, f, g, o = σ(·), σ(·), tanh(·), σ(·) of  x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh
    c_t = f ⊙ c_{t-1} + i ⊙ g,    h_t = o ⊙ tanh(c_t)

Args:
    x: (T, B, D) inputs, time-major; or a (T, B) integer array of token ids in [0, D), each
        standing for a one-hot row over D (a gather of w_ih's columns: the one-hot rows are
        never built, and backward returns dx = None).
    h0, c0: (B, H) initial hidden and cell states, or None for zeros.
    w_ih: (4H, D) input weights, gate rows in PyTorch's order i, f, g, o. Its dtype (float32 or
        float64) is the dtype of the call.
    w_hh: (4H, H) recurrent weights.
    b_ih, b_hh: (4H,) biases, or None.
    lengths: (B,) integer sequence lengths in [0, T], any order, or None (every length T);
        reverse: a bool. As rnn_forward: y is 0 past a length, h_n[b] and c_n[b] are the states
        after element b's own last step (h0[b], c0[b] for length 0), reverse reads x[len-1]
        .. x[0] and writes each output where it read; work proportional to sum(lengths).
    training: keep what backward needs and return it as ``cache``; False returns None.
    stream_in, stream_out: _StepStream objects of the wavefront schedule (rnncore.wavefront),
        or None: x is stream_in.rows, read step by step as another call writes it; each step's
        h_t (times stream_out's mask) is written to stream_out.rows (T, B, H) as soon as it is
        computed. Both need lengths=None and reverse=False.

Returns:
    y: (T, B, H) every step's h_t; h_n, c_n: (B, H) the final states; cache: an opaque
    LSTMCache for lstm_backward (or None). It holds copies of x and the weights.

Raises:
    TypeError / ValueError naming the argument, or MemoryError, as rnn_forward.
)doc";

const char *kLstmBackwardDoc = R"doc(Backpropagation through time for lstm_forward.

Args:
    dy: (T, B, H) gradient with respect to y, or None (zero).
    dh_n, dc_n: (B, H) gradients with respect to h_n and c_n, or None (zero).
    cache: the LSTMCache from lstm_forward(..., training=True); not modified, so it may be
        used again.
    stream_in, stream_out: as lstm_forward's, for the wavefront schedule: dy is stream_in.rows,
        read from the last step down as another call writes it; dx (times stream_out's mask)
        goes to stream_out.rows (T, B, D) step by step and the returned dx is None. The
        forward must have had lengths=None and dense x.

Returns:
    (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh) with shapes (T, B, D), (B, H), (B, H),
    (4H, D), (4H, H), (4H,), (4H,); db_ih / db_hh are None where that bias was None.
    dx is None when the forward's x was token ids (one-hot input). With the forward's
    lengths, dy past a length is ignored and dx is 0 there.
)doc";

}  // namespace

void bind_lstm(py::module_ &m) {
  bind_cache<LstmCache>(m, "LSTMCache",
                        "Opaque workspace of lstm_forward(training=True), consumed by "
                        "lstm_backward.");
  m.def("lstm_forward", &lstm_forward_py, py::arg("x"), py::arg("h0"), py::arg("c0"),
        py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih") = py::none(),
        py::arg("b_hh") = py::none(), py::kw_only(), py::arg("lengths") = py::none(),
        py::arg("reverse") = py::bool_(false), py::arg("training") = py::bool_(true),
        py::arg("stream_in") = py::none(), py::arg("stream_out") = py::none(), kLstmForwardDoc);
  m.def("lstm_backward", &lstm_backward_py, py::arg("dy"), py::arg("dh_n"), py::arg("dc_n"),
        py::arg("cache"), py::kw_only(), py::arg("stream_in") = py::none(),
        py::arg("stream_out") = py::none(), kLstmBackwardDoc);
}

}  // namespace rnncore::bindings
