// The GRU's bindings: gru_forward, gru_backward and the cache class.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstring>
#include <memory>
#include <string>

#include "bindings/arrays.h"
#include "bindings/bindings.h"
#include "bindings/sequence.h"
#include "bindings/validate.h"
#include "cells/gru.h"

namespace rnncore::bindings {

namespace {

struct GruCache : SeqCache {
  bool reset_after;
  std::string describe() const {
    return SeqCache::describe() + (reset_after ? " reset_after" : " reset_before");
  }
};

template <typename T>
py::tuple gru_forward_impl(const SeqArgs<T> &a, DType dt, bool reset_after, bool training) {
  auto y = new_array<T>({a.T, a.B, a.H});
  auto h_n = new_array<T>({a.B, a.H});
  auto c = new_cache<GruCache, GruWorkspace<T>>(a, dt);  // inference: lives only for this call
  c->reset_after = reset_after;
  const SeqSizes n = c->sizes();  // with the packed layout of lengths
  {
    T *yp = y.mutable_data(), *hnp = h_n.mutable_data();
    const SeqInputs<T> in = inputs_of(a);
    ComputeScope nogil;
    const auto ws = c->template workspace<GruWorkspace<T>>();
    ws.prepare(in, n, reset_after);
    gru_forward<T>(ws.forward_args(n), reset_after);
    read_outputs(yp, hnp, ws.seq, n);
  }
  py::object cache = training ? py::cast(std::move(c)) : py::none();
  return py::make_tuple(y, h_n, cache);
}

py::tuple gru_forward_py(py::handle x, py::handle h0, py::handle w_ih, py::handle w_hh,
                         py::handle b_ih, py::handle b_hh, py::handle reset_after_,
                         py::handle lengths, py::handle reverse_, py::handle training_) {
  const std::string fn = "gru_forward";
  const bool reset_after = flag(fn, reset_after_, "reset_after");
  const bool training = flag(fn, training_, "training");
  const bool reverse = reverse_arg(fn, reverse_);
  const DType dt = dtype_from(fn, w_ih, "w_ih");
  Dims d(fn, 3);
  return dispatch(dt, [&](auto zero) {
    using T = decltype(zero);
    auto a = take_seq_args<T>(d, dt, 3, x, h0, {}, w_ih, w_hh, b_ih, b_hh, false, training, lengths,
                              reverse);
    return gru_forward_impl<T>(a, dt, reset_after, training);
  });
}

template <typename T>
py::tuple gru_backward_impl(const GruCache &c, py::handle dy_, py::handle dh_n_) {
  Dims d = cache_dims("gru_backward", c);
  py::object dy = take_grad<T>(d, c, dy_, "dy", "TBH");
  py::object dh_n = take_grad<T>(d, c, dh_n_, "dh_n", "BH");
  const SeqSizes n = c.sizes();
  const idx H3 = 3 * c.H;
  T *dxp;
  py::object dx = new_dx<T>(c, &dxp);
  auto dh0 = new_array<T>({c.B, c.H});
  auto dw_ih = new_array<T>({H3, c.D});
  auto dw_hh = new_array<T>({H3, c.H});
  auto db_ih = new_array<T>({H3});
  auto db_hh = new_array<T>({H3});
  auto scratch = carve_block<GruScratch<T>>(n, c.one_hot);
  const GradOrder<T> order(n, c.one_hot);  // lengths: the packed side of the gradients
  const T *dyp = ptr_or_null<T>(dy), *dhnp = ptr_or_null<T>(dh_n);
  T *dh0p = dh0.mutable_data();
  const GruBackwardArgs<T> args{{order.out(dxp, 0), order.out(dh0p, 1), dw_ih.mutable_data(),
                                 dw_hh.mutable_data(), db_ih.mutable_data(), db_hh.mutable_data()},
                                order.in(dyp, 0),
                                order.in(dhnp, 1),
                                c.workspace<GruWorkspace<T>>(),
                                scratch.at,
                                n};
  {
    ComputeScope nogil;
    order.pack(dyp, dhnp, nullptr);
    gru_backward<T>(args, c.reset_after);
    order.unpack(dxp, dh0p, nullptr);
  }
  py::object bi = c.has_b_ih ? py::object(db_ih) : py::none();
  py::object bh = c.has_b_hh ? py::object(db_hh) : py::none();
  return py::make_tuple(dx, dh0, dw_ih, dw_hh, bi, bh);
}

py::tuple gru_backward_py(py::handle dy, py::handle dh_n, py::handle cache) {
  const auto &c = cache_arg<GruCache>(cache, "gru_backward", "GRUCache", "gru_forward");
  return dispatch(c.dtype,
                  [&](auto zero) { return gru_backward_impl<decltype(zero)>(c, dy, dh_n); });
}

const char *kGruForwardDoc = R"doc(GRU forward over a whole sequence (PyTorch's nn.GRU).

    r = σ(W_ir x + b_ir + W_hr h + b_hr),   z = σ(W_iz x + b_iz + W_hz h + b_hz)
    reset_after=True  (PyTorch):             n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
    reset_after=False (Cho et al., char-rnn): n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)
    h' = (1 − z) ⊙ n + z ⊙ h

Args:
    x: (T, B, D) inputs, time-major; or a (T, B) integer array of token ids in [0, D), each
        standing for a one-hot row over D (a gather of w_ih's columns: the one-hot rows are
        never built, and backward returns dx = None).
    h0: (B, H) initial state, or None for zeros.
    w_ih: (3H, D) input weights, gate rows r, z, n. Its dtype (float32 or float64) is the
        dtype of the call.
    w_hh: (3H, H) recurrent weights (same shapes for both variants).
    b_ih, b_hh: (3H,) biases, or None.
    reset_after: which GRU (above).
    lengths: (B,) integer sequence lengths in [0, T], any order, or None (every length T);
        reverse: a bool. As rnn_forward: y is 0 past a length, h_n[b] is the state after
        element b's own last step (h0[b] for length 0), reverse reads x[len-1] .. x[0] and
        writes each output where it read; work proportional to sum(lengths).
    training: keep what backward needs and return it as ``cache``; False returns None.

Returns:
    y: (T, B, H) every step's h_t; h_n: (B, H); cache: an opaque GRUCache for gru_backward
    (or None). It holds copies of x and the weights.

Raises:
    TypeError / ValueError naming the argument, or MemoryError, as rnn_forward.
)doc";

const char *kGruBackwardDoc = R"doc(Backpropagation through time for gru_forward.

Args:
    dy: (T, B, H) gradient with respect to y, or None (zero).
    dh_n: (B, H) gradient with respect to h_n, or None (zero).
    cache: the GRUCache from gru_forward(..., training=True); not modified, so it may be used
        again.

Returns:
    (dx, dh0, dw_ih, dw_hh, db_ih, db_hh) with shapes (T, B, D), (B, H), (3H, D), (3H, H),
    (3H,), (3H,); db_ih / db_hh are None where that bias was None.
    dx is None when the forward's x was token ids (one-hot input). With the forward's
    lengths, dy past a length is ignored and dx is 0 there.
)doc";

}  // namespace

void bind_gru(py::module_ &m) {
  bind_cache<GruCache>(m, "GRUCache",
                       "Opaque workspace of gru_forward(training=True), consumed by "
                       "gru_backward.")
      .def_property_readonly("reset_after", [](const GruCache &c) { return c.reset_after; });
  m.def("gru_forward", &gru_forward_py, py::arg("x"), py::arg("h0"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("b_ih") = py::none(), py::arg("b_hh") = py::none(), py::kw_only(),
        py::arg("reset_after") = py::bool_(true), py::arg("lengths") = py::none(),
        py::arg("reverse") = py::bool_(false), py::arg("training") = py::bool_(true),
        kGruForwardDoc);
  m.def("gru_backward", &gru_backward_py, py::arg("dy"), py::arg("dh_n"), py::arg("cache"),
        kGruBackwardDoc);
}

}  // namespace rnncore::bindings
