// The language model's bindings: the fused output layer (softmax / linear cross-entropy),
// the sampling loop and the small products of the model (_matmul).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/bindings.h"
#include "bindings/validate.h"
#include "common/blas.h"
#include "lm/sample.h"
#include "lm/xent.h"

namespace rnncore::bindings {

namespace {

// The targets of a cross-entropy call with the positions it keeps. Without mask and
// ignore_index: every target range-checked, keep null (all kept). Otherwise keep (N) is 1 where
// mask (if given) is True and the target (if ignore_index is given) differs from ignore_index;
// only kept targets are range-checked (a dropped one may be any integer, e.g. -100 padding) and
// a dropped one is stored as 0 (never read by the kernel).
struct Targets {
  CArray<std::int32_t> y;
  py::object keep_array = py::none();  // py::array_t<std::uint8_t> (N), or None
  const std::uint8_t *keep = nullptr;
};

long long ignore_value(const std::string &fn, py::handle v) {
  const bool np_bool = py::isinstance<py::array>(v) ||
                       std::string(py::str(py::type::of(v).attr("__name__"))).rfind("bool", 0) == 0;
  if (PyBool_Check(v.ptr()) || np_bool || !PyIndex_Check(v.ptr()))
    throw py::type_error(fn + ": ignore_index must be an int or None, got " + type_name(v));
  py::object i = py::reinterpret_steal<py::object>(PyNumber_Index(v.ptr()));
  if (!i) throw py::error_already_set();
  int overflow = 0;
  const long long r = PyLong_AsLongLongAndOverflow(i.ptr(), &overflow);
  if (overflow)
    throw py::value_error(fn + ": ignore_index must fit in 64 bits, got " +
                          std::string(py::str(v)));
  return r;
}

Targets take_targets(Dims &d, py::handle targets_, py::handle mask_, py::handle ignore_, idx V) {
  const std::string &fn = d.fn();
  if (mask_.is_none() && ignore_.is_none()) return {take_ids(d, targets_, "targets", V, "N")};
  const bool has_ignore = !ignore_.is_none();
  const long long ignore = has_ignore ? ignore_value(fn, ignore_) : 0;
  py::array a = peek_ids(fn, targets_, "targets");
  d.check(a, "targets", "N");
  const idx N = d['N'];
  py::array_t<bool, py::array::c_style> mask;
  if (!mask_.is_none()) {
    py::array m = py::reinterpret_steal<py::array>(py::handle());
    if (py::isinstance<py::array>(mask_) || py::isinstance<py::list>(mask_) ||
        py::isinstance<py::tuple>(mask_)) {
      try {
        m = py::array::ensure(mask_);
      } catch (py::error_already_set &) {
      }
    }
    if (!m || m.dtype().kind() != 'b')
      throw py::type_error(
          fn + ": mask must be a bool array of shape (N,) (True keeps a position), got " +
          (m ? "an array of dtype " + std::string(py::str(m.dtype())) : type_name(mask_)));
    d.check(m, "mask", "N");
    mask = contiguous<bool>(m);
  }
  auto wide = contiguous<std::int64_t>(a);  // any integer type, any value: one copy
  Targets t{CArray<std::int32_t>(std::vector<idx>{N})};
  auto keep = py::array_t<std::uint8_t>(std::vector<idx>{N});
  const std::int64_t *yv = wide.data();
  const bool *mv = mask_.is_none() ? nullptr : mask.data();
  std::int32_t *yo = t.y.mutable_data();
  std::uint8_t *ko = keep.mutable_data();
  for (idx n = 0; n < N; ++n) {
    const bool k = (!mv || mv[n]) && !(has_ignore && yv[n] == ignore);
    ko[n] = k ? 1 : 0;
    if (k && (yv[n] < 0 || yv[n] >= V))
      throw py::value_error(fn + ": targets must hold ids in [0, " + std::to_string(V) +
                            ") at the kept positions, got " + std::to_string(yv[n]) +
                            " at flat position " + std::to_string(n) +
                            (has_ignore ? " (ignore_index is " + std::to_string(ignore) + ")"
                                        : std::string(" (mask is True there)")));
    yo[n] = k ? static_cast<std::int32_t>(yv[n]) : 0;
  }
  t.keep = keep.data();
  t.keep_array = keep;
  return t;
}

template <typename T>
py::tuple softmax_xent_impl(const std::string &fn, py::handle logits_, py::handle targets_,
                            py::handle mask_, py::handle ignore_, bool grad, DType dt) {
  Dims d(fn);
  d.dtype_src = "logits";
  auto logits = take<T>(d, logits_, "logits", "of shape (N, V)", "NV", dt);
  if (d['V'] < 1) throw py::value_error(fn + ": logits must have V >= 1 columns, got 0");
  Targets tg = take_targets(d, targets_, mask_, ignore_, d['V']);
  const idx N = d['N'], V = d['V'];
  checked_count(fn, {N, V}, "logits");
  idx K = N;
  if (tg.keep) K = std::count(tg.keep, tg.keep + N, std::uint8_t(1));
  auto row_loss = new_array<T>({N});
  py::object dlogits = py::none();
  T *dp = nullptr;
  if (grad) {
    auto a = new_array<T>({N, V});
    dp = a.mutable_data();
    dlogits = a;
  }
  {
    ComputeScope nogil;
    if (K > 0)
      softmax_xent<T>(row_loss.mutable_data(), dp, logits.data(), tg.y.data(), tg.keep, T(1) / T(K),
                      N, static_cast<int>(V));
    else if (dp)
      std::fill(dp, dp + N * V, T(0));
  }
  double total = 0.0;
  if (K > 0)
    for (idx n = 0; n < N; ++n) total += static_cast<double>(row_loss.data()[n]);
  return py::make_tuple(K > 0 ? total / K : 0.0, dlogits);
}

py::tuple softmax_xent_py(py::handle logits, py::handle targets, py::handle grad_, py::handle mask,
                          py::handle ignore_index) {
  const std::string fn = "softmax_cross_entropy";
  const bool grad = flag(fn, grad_, "grad");
  const DType dt = dtype_from(fn, logits, "logits");
  return dispatch(dt, [&](auto zero) {
    return softmax_xent_impl<decltype(zero)>(fn, logits, targets, mask, ignore_index, grad, dt);
  });
}

template <typename T>
py::tuple linear_xent_impl(const std::string &fn, py::handle h_, py::handle w_, py::handle b_,
                           py::handle targets_, py::handle mask_, py::handle ignore_, bool grad,
                           DType dt) {
  Dims d(fn);
  d.dtype_src = "w";
  auto w = take<T>(d, w_, "w", "of shape (V, H)", "VH", dt);
  auto h = take<T>(d, h_, "h", "of shape (N, H)", "NH", dt);
  py::object b = take_optional<T>(d, b_, "b", "of shape (V,)", "V", dt);
  if (d['V'] < 1) throw py::value_error(fn + ": w must have V >= 1 rows, got 0");
  Targets tg = take_targets(d, targets_, mask_, ignore_, d['V']);
  check_blas_dims(d, {'N', 'H', 'V'});
  const idx N = d['N'], H = d['H'], V = d['V'];
  Block scratch(static_cast<std::size_t>(checked_count(fn, {N, V + 1}, "the logits")) * sizeof(T));
  py::object dh = py::none(), dw = py::none(), db = py::none();
  T *dhp = nullptr, *dwp = nullptr, *dbp = nullptr;
  if (grad) {
    auto a = new_array<T>({N, H});
    auto bw = new_array<T>({V, H});
    dhp = a.mutable_data(), dwp = bw.mutable_data();
    dh = a, dw = bw;
    if (!b.is_none()) {
      auto bb = new_array<T>({V});
      dbp = bb.mutable_data();
      db = bb;
    }
  }
  double loss;
  {
    ComputeScope nogil;
    T *logits = scratch.as<T>();
    loss = linear_xent<T>(dhp, dwp, dbp, logits, logits + N * V, h.data(), w.data(),
                          ptr_or_null<T>(b), tg.y.data(), tg.keep, int(N), int(H), int(V));
  }
  return py::make_tuple(loss, dh, dw, db);
}

py::tuple linear_xent_py(py::handle h, py::handle w, py::handle b, py::handle targets,
                         py::handle grad_, py::handle mask, py::handle ignore_index) {
  const std::string fn = "linear_cross_entropy";
  const bool grad = flag(fn, grad_, "grad");
  const DType dt = dtype_from(fn, w, "w");
  return dispatch(dt, [&](auto zero) {
    return linear_xent_impl<decltype(zero)>(fn, h, w, b, targets, mask, ignore_index, grad, dt);
  });
}

// A state array the loop writes into: exactly (L, H), C-contiguous, writeable, the call's dtype.
template <typename T>
T *inout(const std::string &fn, py::handle obj, const char *name, idx L, idx H) {
  if (!py::isinstance<py::array_t<T>>(obj))
    throw py::type_error(fn + ": " + name + " must be a writeable C-contiguous " +
                         (sizeof(T) == 4 ? "float32" : "float64") + " array, got " +
                         type_name(obj));
  auto a = py::reinterpret_borrow<py::array_t<T>>(obj);
  if (a.ndim() != 2 || a.shape(0) != L || a.shape(1) != H || !a.writeable() ||
      !(a.flags() & py::array::c_style))
    throw py::value_error(fn + ": " + name + " must be a writeable C-contiguous array of shape (" +
                          std::to_string(L) + ", " + std::to_string(H) + "), got shape " +
                          shape_str(shape_of(a)));
  return a.mutable_data();
}

template <typename T>
std::unique_ptr<Sampler<T>> sampler_impl(const std::string &fn, CellKind kind, py::list layers,
                                         py::handle embedding, py::handle w_out_, py::handle b_out_,
                                         DType dt) {
  const int G = cell_gates(kind);
  Dims d(fn, G);
  d.dtype_src = "w_out";
  auto w_out = take<T>(d, w_out_, "w_out", "of shape (V, H)", "VH", dt);
  py::object b_out = take_optional<T>(d, b_out_, "b_out", "of shape (V,)", "V", dt);
  const idx V = d['V'], H = d['H'], L = static_cast<idx>(layers.size());
  if (V < 1 || H < 1 || L < 1)
    throw py::value_error(fn + ": need V >= 1, H >= 1 and at least one layer");
  std::vector<py::object> keep;  // converted arrays, alive until the Sampler has its copies
  SampleModel<T> m{kind, int(H), int(V), {}, nullptr, nullptr, nullptr};
  py::object emb = take_optional<T>(d, embedding, "embedding", "of shape (V, E)", "VE", dt);
  if (!emb.is_none()) m.embedding = emb.cast<CArray<T>>().data();
  for (idx k = 0; k < L; ++k) {
    py::tuple t = layers[k].cast<py::tuple>();
    if (t.size() != 4)
      throw py::value_error(fn + ": layers[" + std::to_string(k) +
                            "] must be (w_ih, w_hh, b_ih, b_hh)");
    Dims dk(fn, G);
    dk.dtype_src = "w_out";
    dk.bind('H', H, "w_out");
    dk.bind('I', k == 0 ? (m.embedding ? d['E'] : V) : H, k == 0 ? "the input" : "H");
    auto w_ih = take<T>(dk, t[0], "w_ih", "of shape (G*H, D)", "GI", dt);
    auto w_hh = take<T>(dk, t[1], "w_hh", "of shape (G*H, H)", "GH", dt);
    py::object b_ih = take_optional<T>(dk, t[2], "b_ih", "of shape (G*H,)", "G", dt);
    py::object b_hh = take_optional<T>(dk, t[3], "b_hh", "of shape (G*H,)", "G", dt);
    m.layers.push_back(
        {w_ih.data(), w_hh.data(), ptr_or_null<T>(b_ih), ptr_or_null<T>(b_hh), int(dk['I'])});
    keep.insert(keep.end(), {w_ih, w_hh, b_ih, b_hh});
  }
  m.w_out = w_out.data();
  m.b_out = ptr_or_null<T>(b_out);
  ComputeScope nogil;
  return std::make_unique<Sampler<T>>(m);
}

// rnncore.sample's native half: a model's weights packed once (lm/sample.h), then run per chunk.
class PySampler {
 public:
  PySampler(const std::string &cell, py::list layers, py::handle embedding, py::handle w_out,
            py::handle b_out) {
    const std::string fn = "_Sampler";
    const std::map<std::string, CellKind> kinds = {{"rnn_tanh", CellKind::RnnTanh},
                                                   {"rnn_relu", CellKind::RnnRelu},
                                                   {"lstm", CellKind::Lstm},
                                                   {"gru", CellKind::Gru},
                                                   {"gru_reset_before", CellKind::GruResetBefore}};
    auto it = kinds.find(cell);
    if (it == kinds.end())
      throw py::value_error(fn +
                            ": cell must be rnn_tanh, rnn_relu, lstm, gru or "
                            "gru_reset_before, got '" +
                            cell + "'");
    const DType dt = dtype_from(fn, w_out, "w_out");
    if (dt == DType::F32)
      f32_ = sampler_impl<float>(fn, it->second, layers, embedding, w_out, b_out, dt);
    else
      f64_ = sampler_impl<double>(fn, it->second, layers, embedding, w_out, b_out, dt);
  }

  py::array_t<std::int32_t> run(py::handle h, py::handle c, py::handle prime, long long n,
                                double temperature, int top_k, bool greedy,
                                py::handle rng_state) const {
    const std::string fn = "_Sampler.run";
    if (n < 0) throw py::value_error(fn + ": n must be >= 0, got " + std::to_string(n));
    if (!(temperature > 0) || !std::isfinite(temperature))
      throw py::value_error(fn + ": temperature must be a finite number > 0, got " +
                            std::to_string(temperature));
    if (top_k < 0) throw py::value_error(fn + ": top_k must be >= 0, got " + std::to_string(top_k));
    const SampleOptions opt{temperature, top_k, greedy};
    if (f32_) return run_impl<float>(fn, *f32_, h, c, prime, n, opt, rng_state);
    return run_impl<double>(fn, *f64_, h, c, prime, n, opt, rng_state);
  }

 private:
  template <typename T>
  static py::array_t<std::int32_t> run_impl(const std::string &fn, const Sampler<T> &s,
                                            py::handle h_, py::handle c_, py::handle prime_, idx n,
                                            const SampleOptions &opt, py::handle rng_) {
    const idx L = s.layers(), H = s.hidden();
    T *h = inout<T>(fn, h_, "h", L, H);
    T *c = s.cell() == CellKind::Lstm ? inout<T>(fn, c_, "c", L, H) : nullptr;
    py::array prime_a = peek_ids(fn, prime_, "prime");
    if (prime_a.ndim() != 1 || prime_a.size() < 1)
      throw py::value_error(fn +
                            ": prime must be a 1-D array of at least one token id, got shape " +
                            shape_str(shape_of(prime_a)));
    auto prime = ids_in_range(fn, prime_a, "prime", s.vocab());
    if (!py::isinstance<py::array_t<std::uint64_t>>(rng_) ||
        py::cast<py::array>(rng_).size() != 4 || !py::cast<py::array>(rng_).writeable() ||
        !(py::cast<py::array>(rng_).flags() & py::array::c_style))
      throw py::type_error(fn +
                           ": rng_state must be a writeable C-contiguous uint64 array of 4 "
                           "elements, got " +
                           type_name(rng_));
    auto rs = py::reinterpret_borrow<py::array_t<std::uint64_t>>(rng_);
    py::array_t<std::int32_t> out(n);
    {
      ComputeScope nogil;
      s.run(h, c, prime.data(), prime.size(), n, opt, Rng{rs.mutable_data()}, out.mutable_data());
    }
    return out;
  }

  std::unique_ptr<Sampler<float>> f32_;  // the one of the model's dtype is set
  std::unique_ptr<Sampler<double>> f64_;
};

const char *kSoftmaxXentDoc = R"doc(Fused, numerically stable softmax + cross-entropy.

Args:
    logits: (N, V) float32 or float64 scores (any N >= 0, V >= 1).
    targets: (N,) integer token ids in [0, V) at the kept positions (a dropped position's
        target may be any integer, e.g. -100 padding: it is not checked nor read).
    grad: also return the gradient.
    mask: (N,) bool array, True keeps a position, or None (all kept).
    ignore_index: an int; positions whose target equals it are dropped (as torch's
        cross_entropy(ignore_index=...)), or None. Combined with mask: kept = mask and
        target != ignore_index.

Returns:
    (loss, dlogits): loss the mean over the K kept rows of logsumexp(logits_n) -
    logits_n[target_n] in nats (a Python float; 0.0 when K = 0, N = 0 included); dlogits
    (N, V) = (softmax(logits) - onehot) / K on the kept rows and exactly 0 on the dropped ones
    (all 0 when K = 0), or None with grad=False. A NaN in a kept row makes that row's loss (so
    the mean) NaN and leaves the other rows' gradients finite; a dropped row is never read.
)doc";

const char *kLinearXentDoc = R"doc(The language model's output layer in one call: logits = h wᵀ + b,
softmax cross-entropy against targets, and its backward.

Args:
    h: (N, H) hidden states (T*B positions, one row each).
    w: (V, H) projection weight (nn.Linear's layout); the call's dtype comes from it.
    b: (V,) bias, or None.
    targets: (N,) integer ids in [0, V) at the kept positions (others are not checked).
    grad: compute the gradients too (False: the loss only, no (N, V) gradient pass).
    mask: (N,) bool array, True keeps a position, or None (all kept).
    ignore_index: an int target value whose positions are dropped, or None (as
        softmax_cross_entropy).

Returns:
    (loss, dh, dw, db): the mean cross-entropy over the K kept positions in nats (float; 0.0
    when K = 0); dh (N, H), dw (V, H), db (V,) its gradients (new arrays, not accumulated; dh
    exactly 0 at dropped positions, which add nothing to dw and db; all 0 when K = 0), or None
    with grad=False (db also None when b is None). Threaded over rows (logits, softmax, dh) and vocabulary entries (dw, db); the
    loss is summed in row order, so it depends on the thread count only through the rounding
    of the logits GEMM.
)doc";

// a (M,K) or its transpose times b (K,N) or its transpose, on the vendored BLAS (one thread):
// the language model's small products, kept off NumPy's BLAS and its own thread pool.
py::array matmul_py(py::handle a_, py::handle b_, bool ta, bool tb) {
  const std::string fn = "_matmul";
  const DType dt = dtype_from(fn, a_, "a");
  auto run = [&](auto zero) -> py::array {
    using T = decltype(zero);
    py::array a_raw = peek<T>(fn, a_, "a", "(2-D)", dt, "a");
    py::array b_raw = peek<T>(fn, b_, "b", "(2-D)", dt, "a");
    if (a_raw.ndim() != 2 || b_raw.ndim() != 2)
      throw py::value_error(fn + ": a and b must be 2-D, got " + shape_str(shape_of(a_raw)) +
                            " and " + shape_str(shape_of(b_raw)));
    auto a = contiguous<T>(a_raw);
    auto b = contiguous<T>(b_raw);
    const idx M = ta ? a.shape(1) : a.shape(0), K = ta ? a.shape(0) : a.shape(1);
    const idx K2 = tb ? b.shape(1) : b.shape(0), N = tb ? b.shape(0) : b.shape(1);
    if (K != K2)
      throw py::value_error(fn + ": inner sizes differ: " + shape_str(shape_of(a)) + " and " +
                            shape_str(shape_of(b)));
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX)
      throw py::value_error(fn + ": a size exceeds the 32-bit BLAS limit");
    auto c = new_array<T>({M, N});
    {
      ComputeScope nogil;
      gemm<T>(ta, tb, int(M), int(N), int(K), T(1), a.data(), int(a.shape(1)), b.data(),
              int(b.shape(1)), T(0), c.mutable_data(), int(N));
    }
    return c;
  };
  return dispatch(dt, run);
}

}  // namespace

void bind_lm(py::module_ &m) {
  m.def("_matmul", &matmul_py, py::arg("a"), py::arg("b"), py::arg("trans_a") = false,
        py::arg("trans_b") = false,
        "Private: op(a) @ op(b) on rnncore's BLAS, one thread (small products of the model).");
  m.def("softmax_cross_entropy", &softmax_xent_py, py::arg("logits"), py::arg("targets"),
        py::kw_only(), py::arg("grad") = py::bool_(true), py::arg("mask") = py::none(),
        py::arg("ignore_index") = py::none(), kSoftmaxXentDoc);
  m.def("linear_cross_entropy", &linear_xent_py, py::arg("h"), py::arg("w"), py::arg("b"),
        py::arg("targets"), py::kw_only(), py::arg("grad") = py::bool_(true),
        py::arg("mask") = py::none(), py::arg("ignore_index") = py::none(), kLinearXentDoc);
  py::class_<PySampler>(m, "_Sampler",
                        "Private: the sampling loop behind rnncore.sample (see lm/sample.h): a "
                        "model's weights packed once, copied (later changes to the arrays are "
                        "not seen).")
      .def(py::init<const std::string &, py::list, py::handle, py::handle, py::handle>(),
           py::arg("cell"), py::arg("layers"), py::arg("embedding"), py::arg("w_out"),
           py::arg("b_out"))
      .def("run", &PySampler::run, py::arg("h"), py::arg("c"), py::arg("prime"), py::arg("n"),
           py::arg("temperature"), py::arg("top_k"), py::arg("greedy"), py::arg("rng_state"),
           "Feeds prime, draws n ids; h (L, H), c (L, H) (LSTM) and rng_state (4,) uint64 are "
           "updated in place.");
}

}  // namespace rnncore::bindings
