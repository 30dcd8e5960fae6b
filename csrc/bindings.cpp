// The only pybind11 file. Validation happens here, once, at the boundary: every array is
// checked (type, dtype, rank, shape), converted to C order, and only then does the GIL go and
// a kernel run. Kernels trust their inputs. One bind_<area>(m) per area.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <climits>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "cells/rnn.h"
#include "common/blas.h"
#include "common/threading.h"
#include "common/workspace.h"

namespace py = pybind11;
using namespace rnncore;

namespace {

using idx = std::ptrdiff_t;

// ------------------------------------------------------------------------------------------
// Validation helpers
// ------------------------------------------------------------------------------------------

enum class DType { F32, F64 };

const char *dtype_name(DType d) {
  return d == DType::F32 ? "float32" : "float64";
}

std::string type_name(py::handle obj) {
  return py::str(py::type::handle_of(obj).attr("__name__"));
}

std::string shape_str(const std::vector<idx> &s) {
  std::string out = "(";
  for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + (s.size() == 1 ? ",)" : ")");
}

std::vector<idx> shape_of(const py::array &a) {
  return std::vector<idx>(a.shape(), a.shape() + a.ndim());
}

// Sizes named by letters (T, B, D, H) bound by the first array that mentions them, so that a
// mismatch can say where the expected value came from.
class Dims {
 public:
  explicit Dims(std::string fn) : fn_(std::move(fn)) {}
  const std::string &fn() const { return fn_; }
  bool known(char c) const { return vals_.count(c) != 0; }
  idx operator[](char c) const { return vals_.at(c).first; }
  void bind(char c, idx v, const std::string &from) { vals_[c] = {v, from}; }

  // Check `a` against a spec like "TBD" (one letter per axis); unbound letters are bound.
  void check(const py::array &a, const char *name, const char *spec) {
    const int nd = static_cast<int>(std::strlen(spec));
    const auto s = shape_of(a);
    if (a.ndim() != nd)
      throw py::value_error(fn_ + ": " + name + " must be a " + std::to_string(nd) +
                            "-D array of shape " + spec_str(spec) + ", got a " +
                            std::to_string(a.ndim()) + "-D array of shape " + shape_str(s));
    for (int i = 0; i < nd; ++i) {
      const char c = spec[i];
      if (!known(c)) {
        bind(c, s[i], name);
      } else if ((*this)[c] != s[i]) {
        throw py::value_error(fn_ + ": " + name + " must have shape " + spec_str(spec) + " with " +
                              letter(c) + " = " + std::to_string((*this)[c]) + " (from " +
                              vals_.at(c).second + "), got shape " + shape_str(s));
      }
    }
  }

 private:
  static std::string letter(char c) {
    if (c == 'G') return "4H";  // not used by the vanilla RNN
    return std::string(1, c);
  }
  static std::string spec_str(const char *spec) {
    std::string out = "(";
    for (const char *c = spec; *c; ++c) out += (c == spec ? "" : ", ") + letter(*c);
    return out + (std::strlen(spec) == 1 ? ",)" : ")");
  }
  std::string fn_;
  std::map<char, std::pair<idx, std::string>> vals_;
};

bool is_float_kind(const py::dtype &dt, int itemsize) {
  return dt.kind() == 'f' && dt.itemsize() == itemsize;
}

// The dtype of a call comes from its first weight. Lists are accepted (NumPy decides: floats
// give float64); anything that is not a float32/float64 array is a TypeError.
DType dtype_from(const std::string &fn, py::handle obj, const char *name) {
  if (obj.is_none())
    throw py::type_error(fn + ": " + name + " must be a float32 or float64 array, got None");
  py::array a = py::reinterpret_steal<py::array>(py::handle());  // null, not an empty array
  try {
    a = py::array::ensure(obj);
  } catch (py::error_already_set &) {
  }
  if (!a)
    throw py::type_error(fn + ": " + name + " must be a float32 or float64 array, got " +
                         type_name(obj));
  if (is_float_kind(a.dtype(), 4)) return DType::F32;
  if (is_float_kind(a.dtype(), 8)) return DType::F64;
  throw py::type_error(fn + ": " + name + " must be a float32 or float64 array, got " +
                       (py::isinstance<py::array>(obj)
                            ? "an array of dtype " + std::string(py::str(a.dtype()))
                            : type_name(obj)));
}

// Convert `obj` to a C-contiguous array of the call's dtype T. An ndarray of another dtype is a
// TypeError (no silent casts); lists and tuples are converted once; non-contiguous arrays are
// copied once.
template <typename T>
py::array_t<T, py::array::c_style> take(const std::string &fn, py::handle obj, const char *name,
                                        const char *what, DType dt) {
  const char *want = dtype_name(dt);
  if (obj.is_none())
    throw py::type_error(fn + ": " + name + " must be a " + want + " array " + what + ", got None");
  if (py::isinstance<py::array>(obj)) {
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (!is_float_kind(a.dtype(), sizeof(T)))
      throw py::type_error(fn + ": " + name + " must have dtype " + want +
                           " (the dtype of the weights), got " + std::string(py::str(a.dtype())));
  } else if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj)) {
    throw py::type_error(fn + ": " + name + " must be a " + want + " array " + what + ", got " +
                         type_name(obj));
  }
  auto out = py::reinterpret_steal<py::array_t<T, py::array::c_style>>(py::handle());  // null
  try {
    out = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(obj);
  } catch (py::error_already_set &) {
  }
  if (!out)
    throw py::type_error(fn + ": " + name + " must be a " + want + " array " + what + ", got a " +
                         type_name(obj) + " that does not convert to one");
  return out;
}

template <typename T>
py::object take_optional(const std::string &fn, py::handle obj, const char *name, const char *what,
                         DType dt) {
  if (obj.is_none()) return py::none();
  return take<T>(fn, obj, name, what, dt);
}

// Product of sizes, refusing anything that would overflow the 32-bit BLAS interface or size_t.
idx checked_count(const std::string &fn, std::initializer_list<idx> dims, const char *what) {
  idx n = 1;
  for (idx d : dims) {
    if (d != 0 && n > std::numeric_limits<idx>::max() / 16 / d)
      throw py::value_error(fn + ": " + what + " is too large to allocate");
    n *= d;
  }
  return n;
}

void check_blas_dims(const Dims &d, std::initializer_list<char> letters, idx rows) {
  for (char c : letters)
    if (d[c] > INT_MAX)
      throw py::value_error(d.fn() + ": size " + std::string(1, c) + " = " + std::to_string(d[c]) +
                            " exceeds the 32-bit BLAS limit " + std::to_string(INT_MAX));
  if (rows > INT_MAX)
    throw py::value_error(d.fn() + ": T*B = " + std::to_string(rows) +
                          " exceeds the 32-bit BLAS limit " + std::to_string(INT_MAX));
}

// ------------------------------------------------------------------------------------------
// Output arrays live in pooled blocks: NumPy frees them back into the workspace pool.
// ------------------------------------------------------------------------------------------

struct Owned {
  void *ptr;
  std::size_t capacity;
};

template <typename T>
py::array_t<T> new_array(const std::vector<idx> &shape) {
  idx n = 1;
  for (idx s : shape) n *= s;
  Block blk(static_cast<std::size_t>(n) * sizeof(T));
  auto *own = new Owned{nullptr, 0};
  own->ptr = blk.detach(&own->capacity);
  py::capsule base(own, [](void *p) {
    auto *o = static_cast<Owned *>(p);
    release_to_pool(o->ptr, o->capacity);
    delete o;
  });
  return py::array_t<T>(shape, static_cast<T *>(own->ptr), base);
}

template <typename T>
const T *ptr_or_null(const py::object &o) {
  return o.is_none() ? nullptr : py::cast<py::array_t<T, py::array::c_style>>(o).data();
}

// ------------------------------------------------------------------------------------------
// Runtime: threads and BLAS
// ------------------------------------------------------------------------------------------

void bind_runtime(py::module_ &m) {
  m.def(
      "set_num_threads",
      [](py::object n) {
        if (!py::isinstance<py::int_>(n) || py::isinstance<py::bool_>(n))
          throw py::type_error("set_num_threads: n must be an int, got " + type_name(n));
        const long long v = n.cast<long long>();
        if (v < 1 || v > 4096)
          throw py::value_error("set_num_threads: n must be between 1 and 4096, got " +
                                std::to_string(v));
        set_num_threads(static_cast<int>(v));
      },
      py::arg("n"),
      "Set the number of OpenMP threads rnncore's kernels use (n >= 1).\n\n"
      "Affects only rnncore: OMP_NUM_THREADS and other OpenMP users in the process are left "
      "alone.");
  m.def("get_num_threads", &num_threads,
        "Number of threads rnncore's kernels use: set_num_threads(), else OMP_NUM_THREADS, else "
        "all cores.");
  m.def(
      "blas_info",
      [] {
        py::dict d;
        d["corename"] = std::string(scipy_openblas_get_corename());
        d["config"] = std::string(scipy_openblas_get_config());
        d["blas_threads"] = scipy_openblas_get_num_threads();
        return d;
      },
      "The vendored OpenBLAS: {'corename': kernel in use (OPENBLAS_CORETYPE respected), "
      "'config': build configuration, 'blas_threads': its own thread count (always 1)}.");
  m.def("_pool_bytes", [] { return pool_bytes(); }, "Bytes held by the workspace pool.");
  m.def("_empty_pool", [] { return empty_pool(); }, "Free the workspace pool; returns bytes.");
}

// ------------------------------------------------------------------------------------------
// Vanilla RNN
// ------------------------------------------------------------------------------------------

struct RnnCache {
  DType dtype;
  Activation act;
  idx T, B, D, H;
  bool has_b_ih, has_b_hh;
  Block x, w_ih, w_hh, states;  // copies: (T,B,D), (H,D), (H,H); states (T+1,B,H), slot 0 = h0
};

template <typename T>
py::tuple rnn_forward_impl(DType dt, Dims &d, py::handle x_, py::handle h0_, py::handle w_ih_,
                           py::handle w_hh_, py::handle b_ih_, py::handle b_hh_, Activation act,
                           bool training) {
  const std::string &fn = d.fn();
  auto w_ih = take<T>(fn, w_ih_, "w_ih", "of shape (H, D)", dt);
  auto w_hh = take<T>(fn, w_hh_, "w_hh", "of shape (H, H)", dt);
  auto x = take<T>(fn, x_, "x", "of shape (T, B, D)", dt);
  d.check(w_ih, "w_ih", "HD");
  d.check(w_hh, "w_hh", "HH");
  d.check(x, "x", "TBD");
  py::object h0 = take_optional<T>(fn, h0_, "h0", "of shape (B, H)", dt);
  py::object b_ih = take_optional<T>(fn, b_ih_, "b_ih", "of shape (H,)", dt);
  py::object b_hh = take_optional<T>(fn, b_hh_, "b_hh", "of shape (H,)", dt);
  if (!h0.is_none()) d.check(h0, "h0", "BH");
  if (!b_ih.is_none()) d.check(b_ih, "b_ih", "H");
  if (!b_hh.is_none()) d.check(b_hh, "b_hh", "H");
  const idx Tn = d['T'], B = d['B'], D = d['D'], H = d['H'];
  check_blas_dims(d, {'T', 'B', 'D', 'H'}, Tn * B);
  const idx n_states = checked_count(fn, {Tn + 1, B, H}, "the state workspace (T+1)*B*H");
  checked_count(fn, {Tn, B, D}, "x");

  // Combined bias b_ih + b_hh, zeros where absent (the kernel adds one vector).
  Block bias_blk(static_cast<std::size_t>(H) * sizeof(T));
  T *bias = bias_blk.as<T>();
  {
    const T *bi = ptr_or_null<T>(b_ih), *bh = ptr_or_null<T>(b_hh);
    for (idx j = 0; j < H; ++j) bias[j] = (bi ? bi[j] : T(0)) + (bh ? bh[j] : T(0));
  }

  auto y = new_array<T>({Tn, B, H});
  auto h_n = new_array<T>({B, H});
  const idx BH = B * H;
  const T *h0p = ptr_or_null<T>(h0);
  py::object cache = py::none();
  if (training) {
    auto c = std::make_unique<RnnCache>();
    c->dtype = dt;
    c->act = act;
    c->T = Tn, c->B = B, c->D = D, c->H = H;
    c->has_b_ih = !b_ih.is_none();
    c->has_b_hh = !b_hh.is_none();
    c->x = Block(static_cast<std::size_t>(Tn * B * D) * sizeof(T));
    c->w_ih = Block(static_cast<std::size_t>(H * D) * sizeof(T));
    c->w_hh = Block(static_cast<std::size_t>(H * H) * sizeof(T));
    c->states = Block(static_cast<std::size_t>(n_states) * sizeof(T));
    T *states = c->states.as<T>();
    {
      py::gil_scoped_release nogil;
      std::memcpy(c->x.as<T>(), x.data(), c->x.bytes());
      std::memcpy(c->w_ih.as<T>(), w_ih.data(), c->w_ih.bytes());
      std::memcpy(c->w_hh.as<T>(), w_hh.data(), c->w_hh.bytes());
      if (h0p)
        std::memcpy(states, h0p, static_cast<std::size_t>(BH) * sizeof(T));
      else
        std::memset(states, 0, static_cast<std::size_t>(BH) * sizeof(T));
      rnn_forward<T>(states + BH, c->x.as<T>(), states, c->w_ih.as<T>(), c->w_hh.as<T>(), bias, act,
                     int(Tn), int(B), int(D), int(H));
      std::memcpy(y.mutable_data(), states + BH, static_cast<std::size_t>(Tn * BH) * sizeof(T));
      std::memcpy(h_n.mutable_data(), states + Tn * BH, static_cast<std::size_t>(BH) * sizeof(T));
    }
    cache = py::cast(std::move(c));
  } else {
    Block zeros(h0p ? 0 : static_cast<std::size_t>(BH) * sizeof(T));
    T *yp = y.mutable_data();
    {
      py::gil_scoped_release nogil;
      if (!h0p) {
        std::memset(zeros.as<T>(), 0, zeros.bytes());
        h0p = zeros.as<T>();
      }
      rnn_forward<T>(yp, x.data(), h0p, w_ih.data(), w_hh.data(), bias, act, int(Tn), int(B),
                     int(D), int(H));
      const T *last = Tn > 0 ? yp + (Tn - 1) * BH : h0p;
      std::memcpy(h_n.mutable_data(), last, static_cast<std::size_t>(BH) * sizeof(T));
    }
  }
  return py::make_tuple(y, h_n, cache);
}

py::tuple rnn_forward_py(py::handle x, py::handle h0, py::handle w_ih, py::handle w_hh,
                         py::handle b_ih, py::handle b_hh, py::handle nonlinearity, bool training) {
  const std::string fn = "rnn_forward";
  if (!py::isinstance<py::str>(nonlinearity))
    throw py::type_error(fn + ": nonlinearity must be 'tanh' or 'relu', got " +
                         type_name(nonlinearity));
  const std::string nl = nonlinearity.cast<std::string>();
  if (nl != "tanh" && nl != "relu")
    throw py::value_error(fn + ": nonlinearity must be 'tanh' or 'relu', got '" + nl + "'");
  const Activation act = nl == "tanh" ? Activation::Tanh : Activation::Relu;
  const DType dt = dtype_from(fn, w_ih, "w_ih");
  Dims d(fn);
  if (dt == DType::F32)
    return rnn_forward_impl<float>(dt, d, x, h0, w_ih, w_hh, b_ih, b_hh, act, training);
  return rnn_forward_impl<double>(dt, d, x, h0, w_ih, w_hh, b_ih, b_hh, act, training);
}

template <typename T>
py::tuple rnn_backward_impl(const RnnCache &c, py::handle dy_, py::handle dh_n_) {
  const std::string fn = "rnn_backward";
  Dims d(fn);
  d.bind('T', c.T, "the cache");
  d.bind('B', c.B, "the cache");
  d.bind('H', c.H, "the cache");
  py::object dy = take_optional<T>(fn, dy_, "dy", "of shape (T, B, H)", c.dtype);
  py::object dh_n = take_optional<T>(fn, dh_n_, "dh_n", "of shape (B, H)", c.dtype);
  if (!dy.is_none()) d.check(dy, "dy", "TBH");
  if (!dh_n.is_none()) d.check(dh_n, "dh_n", "BH");
  const idx Tn = c.T, B = c.B, D = c.D, H = c.H;
  auto dx = new_array<T>({Tn, B, D});
  auto dh0 = new_array<T>({B, H});
  auto dw_ih = new_array<T>({H, D});
  auto dw_hh = new_array<T>({H, H});
  const bool has_b = c.has_b_ih || c.has_b_hh;
  py::array_t<T> db = has_b ? new_array<T>({H}) : py::array_t<T>();
  Block dpre(static_cast<std::size_t>(Tn * B * H) * sizeof(T));
  {
    T *dbp = has_b ? db.mutable_data() : nullptr;
    const T *dyp = ptr_or_null<T>(dy), *dhp = ptr_or_null<T>(dh_n);
    T *dxp = dx.mutable_data(), *dh0p = dh0.mutable_data(), *dwi = dw_ih.mutable_data(),
      *dwh = dw_hh.mutable_data();
    py::gil_scoped_release nogil;
    rnn_backward<T>(dxp, dh0p, dwi, dwh, dbp, dpre.as<T>(), dyp, dhp, c.states.as<T>(), c.x.as<T>(),
                    c.w_ih.as<T>(), c.w_hh.as<T>(), c.act, int(Tn), int(B), int(D), int(H));
  }
  py::object db_ih = py::none(), db_hh = py::none();
  if (c.has_b_ih) db_ih = db;
  if (c.has_b_hh) {
    if (c.has_b_ih) {
      auto copy = new_array<T>({H});
      std::memcpy(copy.mutable_data(), db.data(), static_cast<std::size_t>(H) * sizeof(T));
      db_hh = copy;
    } else {
      db_hh = db;
    }
  }
  return py::make_tuple(dx, dh0, dw_ih, dw_hh, db_ih, db_hh);
}

py::tuple rnn_backward_py(py::handle dy, py::handle dh_n, py::handle cache) {
  if (!py::isinstance<RnnCache>(cache))
    throw py::type_error(
        std::string("rnn_backward: cache must be the RNNCache returned by "
                    "rnn_forward(..., training=True), got ") +
        (cache.is_none() ? "None (was the forward run with training=False?)" : type_name(cache)));
  const RnnCache &c = cache.cast<const RnnCache &>();
  if (c.dtype == DType::F32) return rnn_backward_impl<float>(c, dy, dh_n);
  return rnn_backward_impl<double>(c, dy, dh_n);
}

const char *kRnnForwardDoc = R"doc(Vanilla RNN forward over a whole sequence (PyTorch's nn.RNN).

    h_t = act(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh),  act = tanh or relu

Args:
    x: (T, B, D) inputs, time-major.
    h0: (B, H) initial state, or None for zeros.
    w_ih: (H, D) input weights. Its dtype (float32 or float64) is the dtype of the call;
        every other array must have it (lists are converted).
    w_hh: (H, H) recurrent weights.
    b_ih, b_hh: (H,) biases, or None.
    nonlinearity: "tanh" or "relu".
    training: keep what backward needs and return it as ``cache``; False returns None.

Returns:
    y: (T, B, H) every step's state h_1..h_T.
    h_n: (B, H) the final state h_T.
    cache: an opaque RNNCache for rnn_backward (or None). It holds copies of x and the
        weights, so later in-place changes to them do not affect the backward pass.

Raises:
    TypeError: an argument is not an array of the call's dtype, or is None where required.
    ValueError: a shape does not match (the message names the argument and the expected size).
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
)doc";

void bind_rnn(py::module_ &m) {
  py::class_<RnnCache>(m, "RNNCache",
                       "Opaque workspace of rnn_forward(training=True), consumed by rnn_backward.")
      .def_property_readonly(
          "shape", [](const RnnCache &c) { return py::make_tuple(c.T, c.B, c.D, c.H); },
          "(T, B, D, H)")
      .def_property_readonly("dtype",
                             [](const RnnCache &c) { return py::dtype(dtype_name(c.dtype)); })
      .def_property_readonly(
          "nonlinearity",
          [](const RnnCache &c) { return c.act == Activation::Tanh ? "tanh" : "relu"; })
      .def_property_readonly(
          "nbytes",
          [](const RnnCache &c) {
            return c.x.bytes() + c.w_ih.bytes() + c.w_hh.bytes() + c.states.bytes();
          },
          "Bytes of workspace held.")
      .def("__repr__", [](const RnnCache &c) {
        return "<RNNCache T=" + std::to_string(c.T) + " B=" + std::to_string(c.B) +
               " D=" + std::to_string(c.D) + " H=" + std::to_string(c.H) + " " +
               dtype_name(c.dtype) + " " + (c.act == Activation::Tanh ? "tanh" : "relu") + ">";
      });
  m.def("rnn_forward", &rnn_forward_py, py::arg("x"), py::arg("h0"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("b_ih") = py::none(), py::arg("b_hh") = py::none(), py::kw_only(),
        py::arg("nonlinearity") = "tanh", py::arg("training") = true, kRnnForwardDoc);
  m.def("rnn_backward", &rnn_backward_py, py::arg("dy"), py::arg("dh_n"), py::arg("cache"),
        kRnnBackwardDoc);
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "rnncore's compiled kernels (private: use the rnncore package).";
  init_threading();
  bind_runtime(m);
  bind_rnn(m);
#ifdef RNNCORE_VERSION
  m.attr("__version__") = RNNCORE_VERSION;
#endif
}
