// The vanilla RNN's bindings: rnn_forward, rnn_backward and the cache class.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <memory>
#include <string>

#include "bindings/arrays.h"
#include "bindings/bindings.h"
#include "bindings/sequence.h"
#include "bindings/validate.h"
#include "cells/rnn.h"

namespace rnncore::bindings {

namespace {

struct RnnCache : SeqCache {
  Activation act;
  std::string describe() const {
    return SeqCache::describe() + (act == Activation::Tanh ? " tanh" : " relu");
  }
};

template <typename T>
py::tuple rnn_forward_impl(const SeqArgs<T> &a, DType dt, Activation act, bool training) {
  const SeqSizes n = sizes_of(a);
  const SeqInputs<T> in = inputs_of(a);
  auto y = new_array<T>({a.T, a.B, a.H});
  auto h_n = new_array<T>({a.B, a.H});
  T *yp = y.mutable_data(), *hnp = h_n.mutable_data();
  if (!training && !a.one_hot && !a.has_lengths) {  // nothing to keep: straight from the arguments
    auto tmp = carve_block<RnnInferenceBuffers<T>>(n, in.h0 == nullptr);
    {
      ComputeScope nogil;
      tmp.at.prepare(in, n);
      const T *h0 = in.h0 ? in.h0 : tmp.at.h0;
      rnn_forward<T>({yp, in.x, nullptr, h0, in.w_ih, in.w_hh, tmp.at.bias, act, n});
      std::memcpy(hnp, n.T > 0 ? yp + (n.T - 1) * n.BH() : h0,
                  static_cast<std::size_t>(n.BH()) * sizeof(T));
    }
    return py::make_tuple(y, h_n, py::none());  // with the GIL again
  }
  auto c = new_cache<RnnCache, RnnWorkspace<T>>(a, dt);
  c->act = act;
  const SeqSizes nl = c->sizes();  // with the packed layout of lengths
  {
    ComputeScope nogil;
    const auto ws = c->template workspace<RnnWorkspace<T>>();
    ws.prepare(in, nl);
    rnn_forward<T>(ws.forward_args(act, nl));
    read_outputs(yp, hnp, ws.seq, nl);
  }
  return py::make_tuple(y, h_n, training ? py::cast(std::move(c)) : py::none());
}

py::tuple rnn_forward_py(py::handle x, py::handle h0, py::handle w_ih, py::handle w_hh,
                         py::handle b_ih, py::handle b_hh, py::handle nonlinearity,
                         py::handle lengths, py::handle reverse_, py::handle training_) {
  const std::string fn = "rnn_forward";
  const bool training = flag(fn, training_, "training");
  const bool reverse = reverse_arg(fn, reverse_);
  if (!py::isinstance<py::str>(nonlinearity))
    throw py::type_error(fn + ": nonlinearity must be 'tanh' or 'relu', got " +
                         type_name(nonlinearity));
  const std::string nl = nonlinearity.cast<std::string>();
  if (nl != "tanh" && nl != "relu")
    throw py::value_error(fn + ": nonlinearity must be 'tanh' or 'relu', got '" + nl + "'");
  const Activation act = nl == "tanh" ? Activation::Tanh : Activation::Relu;
  const DType dt = dtype_from(fn, w_ih, "w_ih");
  Dims d(fn, 1);
  return dispatch(dt, [&](auto zero) {
    using T = decltype(zero);
    auto a = take_seq_args<T>(d, dt, 1, x, h0, {}, w_ih, w_hh, b_ih, b_hh, false, training, lengths,
                              reverse);
    return rnn_forward_impl<T>(a, dt, act, training);
  });
}

template <typename T>
py::tuple rnn_backward_impl(const RnnCache &c, py::handle dy_, py::handle dh_n_) {
  Dims d = cache_dims("rnn_backward", c);
  py::object dy = take_grad<T>(d, c, dy_, "dy", "TBH");
  py::object dh_n = take_grad<T>(d, c, dh_n_, "dh_n", "BH");
  const SeqSizes n = c.sizes();
  T *dxp;
  py::object dx = new_dx<T>(c, &dxp);
  auto dh0 = new_array<T>({c.B, c.H});
  auto dw_ih = new_array<T>({c.H, c.D});
  auto dw_hh = new_array<T>({c.H, c.H});
  auto db = new_array<T>({c.H});
  auto scratch = carve_block<RnnScratch<T>>(n, c.one_hot);
  const GradOrder<T> order(n, c.one_hot);  // lengths: the packed side of the gradients
  const T *dyp = ptr_or_null<T>(dy), *dhnp = ptr_or_null<T>(dh_n);
  T *dh0p = dh0.mutable_data();
  const RnnBackwardArgs<T> args{{order.out(dxp, 0), order.out(dh0p, 1), dw_ih.mutable_data(),
                                 dw_hh.mutable_data(), db.mutable_data()},
                                order.in(dyp, 0),
                                order.in(dhnp, 1),
                                c.workspace<RnnWorkspace<T>>(),
                                scratch.at,
                                c.act,
                                n};
  {
    ComputeScope nogil;
    order.pack(dyp, dhnp, nullptr);
    rnn_backward<T>(args);
    order.unpack(dxp, dh0p, nullptr);
  }
  auto [db_ih, db_hh] = split_bias_grad<T>(c, db);
  return py::make_tuple(dx, dh0, dw_ih, dw_hh, db_ih, db_hh);
}

py::tuple rnn_backward_py(py::handle dy, py::handle dh_n, py::handle cache) {
  const auto &c = cache_arg<RnnCache>(cache, "rnn_backward", "RNNCache", "rnn_forward");
  return dispatch(c.dtype,
                  [&](auto zero) { return rnn_backward_impl<decltype(zero)>(c, dy, dh_n); });
}

const char *kRnnForwardDoc = R"doc(Vanilla RNN forward over a whole sequence (PyTorch's nn.RNN).

    h_t = act(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh),  act = tanh or relu

Args:
    x: (T, B, D) inputs, time-major; or a (T, B) integer array of token ids in [0, D), each
        standing for a one-hot row over D (a gather of w_ih's columns: the one-hot rows are
        never built, and backward returns dx = None).
    h0: (B, H) initial state, or None for zeros.
    w_ih: (H, D) input weights. Its dtype (float32 or float64) is the dtype of the call;
        every other array must have it (lists are converted).
    w_hh: (H, H) recurrent weights.
    b_ih, b_hh: (H,) biases, or None.
    nonlinearity: "tanh" or "relu".
    lengths: (B,) integer array of sequence lengths in [0, T], any order, or None (every
        length is T). Element b runs steps 0 .. lengths[b]-1: y[t, b] = 0 for t >= lengths[b]
        and h_n[b] is the state after its own last step (h0[b] for length 0); backward
        ignores dy past a length, returns dx = 0 there, and gradients flow only through the
        steps that ran. The rows are sorted and packed internally (PyTorch's packed layout):
        the work is proportional to sum(lengths), not T*B, and the padding of x is never read.
        Every length T is the call without lengths, bitwise.
    reverse: read each sequence from its own last step back to step 0 (x[lengths[b]-1], ...,
        x[0]) and write each output at the position it read; h_n is then the state after
        reading x[0] (the reverse direction of a bidirectional layer). A bool.
    training: keep what backward needs and return it as ``cache``; False returns None.

Returns:
    y: (T, B, H) every step's state h_1..h_T.
    h_n: (B, H) the final state h_T.
    cache: an opaque RNNCache for rnn_backward (or None). It holds copies of x and the
        weights, so later in-place changes to them do not affect the backward pass.

Raises:
    TypeError: an argument is not an array of the call's dtype, or is None where required;
        lengths has a float or bool dtype; reverse is not a bool.
    ValueError: a shape does not match (the message names the argument and the expected size),
        a length is outside [0, T], or a size exceeds the 32-bit BLAS limit or the 2^59-element workspace limit.
    MemoryError: the call needs more than the machine's memory and swap (checked before
        allocating), or an allocation failed.
    Every check comes before any copy: a huge broadcast view is refused, never materialised.
    See docs/reliability.md.
)doc";

const char *kRnnBackwardDoc = R"doc(Backpropagation through time for rnn_forward.

Args:
    dy: (T, B, H) gradient of the loss with respect to y, or None (zero).
    dh_n: (B, H) gradient with respect to h_n, or None (zero).
    cache: the RNNCache that rnn_forward(..., training=True) returned. It is not modified:
        passing it again gives the same result.

Returns:
    (dx, dh0, dw_ih, dw_hh, db_ih, db_hh) with shapes (T, B, D), (B, H), (H, D), (H, H),
    (H,), (H,). db_ih / db_hh are None where the forward had no such bias. dh0 is returned
    even when the forward's h0 was None (it is the gradient at the zero initial state).
    With the forward's lengths, dy past a length is ignored and dx is 0 there; dh0[b] is
    dh_n[b] for a length 0.
    dx is None when the forward's x was token ids (one-hot input).
)doc";

}  // namespace

void bind_rnn(py::module_ &m) {
  bind_cache<RnnCache>(m, "RNNCache",
                       "Opaque workspace of rnn_forward(training=True), consumed by rnn_backward.")
      .def_property_readonly("nonlinearity", [](const RnnCache &c) {
        return c.act == Activation::Tanh ? "tanh" : "relu";
      });
  m.def("rnn_forward", &rnn_forward_py, py::arg("x"), py::arg("h0"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("b_ih") = py::none(), py::arg("b_hh") = py::none(), py::kw_only(),
        py::arg("nonlinearity") = "tanh", py::arg("lengths") = py::none(),
        py::arg("reverse") = py::bool_(false), py::arg("training") = py::bool_(true),
        kRnnForwardDoc);
  m.def("rnn_backward", &rnn_backward_py, py::arg("dy"), py::arg("dh_n"), py::arg("cache"),
        kRnnBackwardDoc);
}

}  // namespace rnncore::bindings
