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
  Block gates, aux;  // (T,B,3H) activated r, z, n (blocked); (T,B,H) see gru.h
  std::size_t nbytes() const { return SeqCache::nbytes() + gates.bytes() + aux.bytes(); }
  std::string describe() const {
    return SeqCache::describe() + (reset_after ? " reset_after" : " reset_before");
  }
};

// W_hh rows (or b_hh) in the order gru.h describes: blocked G = 3 when reset_after; else
// r, z blocked G = 2, then n plain. `src` in PyTorch's order, (3H, cols).
template <typename T>
void gru_recurrent_layout(T *dst, const T *src, int H, idx cols, bool reset_after) {
  if (reset_after) {
    block_gate_rows<T>(dst, src, GateBlocks{H, 3}, cols);
    return;
  }
  block_gate_rows<T>(dst, src, GateBlocks{H, 2}, cols);
  const idx n0 = 2 * static_cast<idx>(H) * cols;
  std::memcpy(dst + n0, src + n0, static_cast<std::size_t>(H * cols) * sizeof(T));
}

template <typename T>
py::tuple gru_forward_impl(const SeqArgs<T> &a, DType dt, bool reset_after, bool training) {
  constexpr int G = 3;
  const idx Tn = a.T, B = a.B, D = a.D, H = a.H, BH = B * H, H3 = G * H;
  const std::size_t sz = sizeof(T);
  // Biases stay separate: b_hn sits inside r ⊙ (...) when reset_after.
  Block b_ih(static_cast<std::size_t>(H3) * sz), b_hh(static_cast<std::size_t>(H3) * sz);
  Block tmp(static_cast<std::size_t>(H3) * sz);
  const T *bi = ptr_or_null<T>(a.b_ih), *bh = ptr_or_null<T>(a.b_hh);
  for (idx j = 0; j < H3; ++j) tmp.as<T>()[j] = bi ? bi[j] : T(0);
  block_gate_rows<T>(b_ih.as<T>(), tmp.as<T>(), GateBlocks{int(H), G}, 1);
  for (idx j = 0; j < H3; ++j) tmp.as<T>()[j] = bh ? bh[j] : T(0);
  gru_recurrent_layout<T>(b_hh.as<T>(), tmp.as<T>(), int(H), 1, reset_after);

  auto y = new_array<T>({Tn, B, H});
  auto h_n = new_array<T>({B, H});
  const T *h0 = ptr_or_null<T>(a.h0);
  auto c = std::make_unique<GruCache>();  // inference: lives only for this call
  fill_cache(*c, a, dt, G);
  c->reset_after = reset_after;
  c->gates = Block(static_cast<std::size_t>(Tn * B * H3) * sz);
  c->aux = Block(static_cast<std::size_t>(Tn * BH) * sz);
  Block gh(static_cast<std::size_t>(B * H3) * sz);
  {
    T *yp = y.mutable_data(), *hnp = h_n.mutable_data();
    ComputeScope nogil;
    T *hs = c->h_states.as<T>();
    copy_input_side<T>(*c, a, G);
    gru_recurrent_layout<T>(c->w_hh.as<T>(), a.w_hh.data(), int(H), H, reset_after);
    if (h0)
      std::memcpy(hs, h0, static_cast<std::size_t>(BH) * sz);
    else
      std::memset(hs, 0, static_cast<std::size_t>(BH) * sz);
    gru_forward<T>(hs + BH, c->gates.as<T>(), c->aux.as<T>(), gh.as<T>(), c->x_ptr<T>(),
                   c->ids_ptr(), hs, c->w_ih.as<T>(), c->w_hh.as<T>(), b_ih.as<T>(), b_hh.as<T>(),
                   reset_after, int(Tn), int(B), int(D), int(H));
    std::memcpy(yp, hs + BH, static_cast<std::size_t>(Tn * BH) * sz);
    std::memcpy(hnp, hs + Tn * BH, static_cast<std::size_t>(BH) * sz);
  }
  py::object cache = training ? py::cast(std::move(c)) : py::none();
  return py::make_tuple(y, h_n, cache);
}

py::tuple gru_forward_py(py::handle x, py::handle h0, py::handle w_ih, py::handle w_hh,
                         py::handle b_ih, py::handle b_hh, py::handle reset_after_,
                         py::handle training_) {
  const std::string fn = "gru_forward";
  const bool reset_after = flag(fn, reset_after_, "reset_after");
  const bool training = flag(fn, training_, "training");
  const DType dt = dtype_from(fn, w_ih, "w_ih");
  Dims d(fn, 3);
  return dispatch(dt, [&](auto zero) {
    using T = decltype(zero);
    return gru_forward_impl<T>(
        take_seq_args<T>(d, dt, 3, x, h0, {}, w_ih, w_hh, b_ih, b_hh, false, training), dt,
        reset_after, training);
  });
}

template <typename T>
py::tuple gru_backward_impl(const GruCache &c, py::handle dy_, py::handle dh_n_) {
  constexpr int G = 3;
  Dims d = cache_dims("gru_backward", c);
  py::object dy = take_grad<T>(d, c, dy_, "dy", "TBH");
  py::object dh_n = take_grad<T>(d, c, dh_n_, "dh_n", "BH");
  const idx Tn = c.T, B = c.B, D = c.D, H = c.H, H3 = G * H;
  const std::size_t sz = sizeof(T);
  T *dxp = nullptr;
  auto [dx, dx_scratch] = dx_or_scratch<T>(c, H3, &dxp);
  auto dh0 = new_array<T>({B, H});
  auto dw_ih = new_array<T>({H3, D});
  auto dw_hh = new_array<T>({H3, H});
  auto db_ih = new_array<T>({H3});
  auto db_hh = new_array<T>({H3});
  Block dgi(static_cast<std::size_t>(Tn * B * H3) * sz),
      dgh(static_cast<std::size_t>(Tn * B * H3) * sz);
  Block dw_scratch(static_cast<std::size_t>(H3 * (D + H + 2)) * sz);
  Block dh(static_cast<std::size_t>(B * H) * sz), drh(static_cast<std::size_t>(B * H) * sz);
  {
    const T *dyp = ptr_or_null<T>(dy), *dhp = ptr_or_null<T>(dh_n);
    T *dh0p = dh0.mutable_data(), *dwi = dw_ih.mutable_data(), *dwh = dw_hh.mutable_data(),
      *dbi = db_ih.mutable_data(), *dbh = db_hh.mutable_data();
    ComputeScope nogil;
    gru_backward<T>(dxp, dh0p, dwi, dwh, dbi, dbh, dgi.as<T>(), dgh.as<T>(), dw_scratch.as<T>(),
                    dh.as<T>(), drh.as<T>(), dyp, dhp, c.h_states.as<T>(), c.gates.as<T>(),
                    c.aux.as<T>(), c.x_ptr<T>(), c.ids_ptr(), c.w_ih.as<T>(), c.w_hh.as<T>(),
                    c.reset_after, int(Tn), int(B), int(D), int(H));
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
    dx is None when the forward's x was token ids (one-hot input).
)doc";

}  // namespace

void bind_gru(py::module_ &m) {
  bind_cache<GruCache>(m, "GRUCache",
                       "Opaque workspace of gru_forward(training=True), consumed by "
                       "gru_backward.")
      .def_property_readonly("reset_after", [](const GruCache &c) { return c.reset_after; });
  m.def("gru_forward", &gru_forward_py, py::arg("x"), py::arg("h0"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("b_ih") = py::none(), py::arg("b_hh") = py::none(), py::kw_only(),
        py::arg("reset_after") = py::bool_(true), py::arg("training") = py::bool_(true),
        kGruForwardDoc);
  m.def("gru_backward", &gru_backward_py, py::arg("dy"), py::arg("dh_n"), py::arg("cache"),
        kGruBackwardDoc);
}

}  // namespace rnncore::bindings
