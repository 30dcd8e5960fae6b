// The only pybind11 file. Validation happens here, once, at the boundary: every array is
// checked (type, dtype, rank, shape), converted to C order, and only then does the GIL go and
// a kernel run. Kernels trust their inputs. One bind_<area>(m) per area.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <climits>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <string>
#include <vector>

#ifdef __linux__
#include <sys/sysinfo.h>
#endif

#include "cells/gru.h"
#include "cells/lstm.h"
#include "cells/rnn.h"
#include "common/blas.h"
#include "common/gates.h"
#include "common/packed_gemm.h"
#include "common/threading.h"
#include "common/workspace.h"
#include "lm/sample.h"
#include "lm/xent.h"

namespace py = pybind11;
using namespace rnncore;

namespace {

using idx = std::ptrdiff_t;

// The scope of a compute call: BLAS back at one thread (with the GIL still held), then the GIL
// released for the kernel.
class ComputeScope {
  // Members are constructed in order: BLAS is reset while the GIL is held, then it is released.
  struct Serial {
    Serial() { ensure_blas_serial(); }
  } serial_;
  py::gil_scoped_release nogil_;
};

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
  // `gates`: the letter G stands for gates*H (the stacked gate rows of a weight).
  explicit Dims(std::string fn, int gates = 1) : fn_(std::move(fn)), gates_(gates) {}
  // What sets the call's dtype, for the message when another array's dtype differs.
  const char *dtype_src = "w_ih";
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
      if (c == 'G') {  // gates*H rows: binds H, or is checked against it
        if (!known('H')) {
          if (s[i] % gates_ != 0)
            throw py::value_error(fn_ + ": " + name + " must have shape " + spec_str(spec) +
                                  ", got shape " + shape_str(s) + ": " + std::to_string(s[i]) +
                                  " is not a multiple of " + std::to_string(gates_));
          bind('H', s[i] / gates_, name);
        } else if (s[i] != gates_ * (*this)['H']) {
          throw py::value_error(fn_ + ": " + name + " must have shape " + spec_str(spec) +
                                " with " + letter('G') + " = " +
                                std::to_string(gates_ * (*this)['H']) + " (from " +
                                vals_.at('H').second + "), got shape " + shape_str(s));
        }
        continue;
      }
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
  std::string letter(char c) const {
    if (c == 'G') return gates_ == 1 ? "H" : std::to_string(gates_) + "H";
    return std::string(1, c);
  }
  std::string spec_str(const char *spec) const {
    std::string out = "(";
    for (const char *c = spec; *c; ++c) out += (c == spec ? "" : ", ") + letter(*c);
    return out + (std::strlen(spec) == 1 ? ",)" : ")");
  }
  std::string fn_;
  int gates_;
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

// The argument `obj` as an array of the call's dtype T, its type and dtype checked but nothing
// copied: an ndarray as given, a list or tuple converted (lists are small: converting one costs
// what building it did). An ndarray of another dtype is a TypeError (no silent casts).
template <typename T>
py::array peek(const std::string &fn, py::handle obj, const char *name, const char *what, DType dt,
               const char *src = "w_ih") {
  const char *want = dtype_name(dt);
  if (obj.is_none())
    throw py::type_error(fn + ": " + name + " must be a " + want + " array " + what + ", got None");
  if (py::isinstance<py::array>(obj)) {
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (!is_float_kind(a.dtype(), sizeof(T)))
      throw py::type_error(
          fn + ": " + name + " must have dtype " + want + " (the dtype of the weights), got " +
          std::string(py::str(a.dtype())) +
          (std::strcmp(name, src) != 0 ? std::string("; the call's dtype is set by ") + src : ""));
    return a;
  }
  if (!py::isinstance<py::list>(obj) && !py::isinstance<py::tuple>(obj))
    throw py::type_error(fn + ": " + name + " must be a " + want + " array " + what + ", got " +
                         type_name(obj));
  auto out = py::reinterpret_steal<py::array>(py::handle());  // null
  try {
    out = py::array_t<T, py::array::c_style | py::array::forcecast>::ensure(obj);
  } catch (py::error_already_set &) {
  }
  if (!out)
    throw py::type_error(fn + ": " + name + " must be a " + want + " array " + what + ", got a " +
                         type_name(obj) + " that does not convert to one");
  return out;
}

// `a` as a C-contiguous, aligned, native-byte-order array of T: `a` itself where it is one, else
// one copy. Called only after the shape (and the sizes it implies) have been checked, so that a
// huge broadcast view (zero strides) is refused before it is materialised; a copy that cannot
// be allocated raises NumPy's MemoryError (not swallowed into a TypeError).
template <typename Elem>
py::array_t<Elem, py::array::c_style> contiguous(const py::array &a) {
  using api = py::detail::npy_api;
  PyObject *p =
      api::get().PyArray_FromAny_(a.ptr(), py::dtype::of<Elem>().release().ptr(), 0, 0,
                                  api::NPY_ARRAY_ENSUREARRAY_ | api::NPY_ARRAY_C_CONTIGUOUS_ |
                                      api::NPY_ARRAY_ALIGNED_ | api::NPY_ARRAY_FORCECAST_,
                                  nullptr);
  if (p == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::array_t<Elem, py::array::c_style>>(p);
}

// peek, check the shape against `spec` (see Dims::check), then make it contiguous.
template <typename T>
py::array_t<T, py::array::c_style> take(Dims &d, py::handle obj, const char *name, const char *what,
                                        const char *spec, DType dt) {
  py::array a = peek<T>(d.fn(), obj, name, what, dt, d.dtype_src);
  d.check(a, name, spec);
  return contiguous<T>(a);
}

template <typename T>
py::object take_optional(Dims &d, py::handle obj, const char *name, const char *what,
                         const char *spec, DType dt) {
  if (obj.is_none()) return py::none();
  return take<T>(d, obj, name, what, spec, dt);
}

// An integer array (token ids), its type checked but nothing copied.
py::array peek_ids(const std::string &fn, py::handle obj, const char *name) {
  if (obj.is_none())
    throw py::type_error(fn + ": " + name + " must be an integer array of token ids, got None");
  py::array a = py::reinterpret_steal<py::array>(py::handle());
  try {
    a = py::array::ensure(obj);
  } catch (py::error_already_set &) {
  }
  if (!a || (a.dtype().kind() != 'i' && a.dtype().kind() != 'u'))
    throw py::type_error(
        fn + ": " + name + " must be an integer array of token ids, got " +
        (a ? "an array of dtype " + std::string(py::str(a.dtype())) : type_name(obj)));
  return a;
}

// Token ids whose shape has been checked: every value in [0, V), converted to int64. The first
// bad value is named with its position.
py::array_t<std::int64_t, py::array::c_style> ids_in_range(const std::string &fn,
                                                           const py::array &a, const char *name,
                                                           idx V) {
  auto ids = contiguous<std::int64_t>(a);
  const std::int64_t *p = ids.data();
  for (idx i = 0; i < ids.size(); ++i)
    if (p[i] < 0 || p[i] >= V)
      throw py::value_error(fn + ": " + name + " must hold ids in [0, " + std::to_string(V) +
                            "), got " + std::to_string(p[i]) + " at flat position " +
                            std::to_string(i));
  return ids;
}

// Token ids of shape `spec` (checked before anything is copied), every value in [0, V). A float
// array is a TypeError (no silent truncation).
py::array_t<std::int64_t, py::array::c_style> take_ids(Dims &d, py::handle obj, const char *name,
                                                       idx V, const char *spec) {
  py::array a = peek_ids(d.fn(), obj, name);
  d.check(a, name, spec);
  return ids_in_range(d.fn(), a, name, V);
}

std::string dims_str(std::initializer_list<idx> dims) {
  std::string out;
  for (idx d : dims) out += (out.empty() ? "" : "*") + std::to_string(d);
  return out;
}

// Product of sizes, refusing one whose bytes (at up to 16 per element) would overflow size_t.
idx checked_count(const std::string &fn, std::initializer_list<idx> dims, const std::string &what) {
  idx n = 1;
  for (idx d : dims) {
    if (d != 0 && n > std::numeric_limits<idx>::max() / 16 / d)
      throw py::value_error(fn + ": " + what + " = " + dims_str(dims) +
                            " elements is too large to allocate (the limit is 2^59 elements)");
    n *= d;
  }
  return n;
}

// Bytes of RAM plus swap, or 0 where unknown.
long double machine_memory() {
#ifdef __linux__
  struct sysinfo si;
  if (sysinfo(&si) == 0)
    return (static_cast<long double>(si.totalram) + static_cast<long double>(si.totalswap)) *
           si.mem_unit;
#endif
  return 0;
}

std::string gib(long double bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1Lf GiB", bytes / (1024.0L * 1024 * 1024));
  return buf;
}

// A call that would need more than the machine's RAM and swap is a MemoryError before anything
// is allocated: with overcommit the allocation itself might succeed and the process be killed
// when the memory is touched.
void check_fits(const std::string &fn, long double bytes, const std::string &what) {
  const long double have = machine_memory();
  if (have > 0 && bytes > have) {
    const std::string msg = fn + ": " + what + " needs at least " + gib(bytes) +
                            ", more than this machine's memory and swap (" + gib(have) + ")";
    PyErr_SetString(PyExc_MemoryError, msg.c_str());
    throw py::error_already_set();
  }
}

void check_blas_dims(const Dims &d, std::initializer_list<char> letters) {
  for (char c : letters)
    if (d[c] > INT_MAX)
      throw py::value_error(d.fn() + ": size " + std::string(1, c) + " = " + std::to_string(d[c]) +
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
  std::size_t n = 1;  // elements; an overflow is a MemoryError, never a short block
  for (idx s : shape) {
    if (s != 0 &&
        n > std::numeric_limits<std::size_t>::max() / sizeof(T) / static_cast<std::size_t>(s))
      throw std::bad_alloc();
    n *= static_cast<std::size_t>(s);
  }
  Block blk(n * sizeof(T));
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
        d["recurrent_kernel"] = std::string(gemm_path_name(gemm_path()));
        return d;
      },
      "The vendored OpenBLAS: {'corename': kernel in use (OPENBLAS_CORETYPE respected), "
      "'config': build configuration, 'blas_threads': its own thread count (always 1)}.");
  m.def(
      "_set_gemm_path",
      [](const std::string &name) {
        for (GemmPath p : {GemmPath::Blas, GemmPath::Portable, GemmPath::Avx2, GemmPath::Avx512})
          if (name == gemm_path_name(p)) {
            if (!set_gemm_path(p))
              throw py::value_error(std::string("_set_gemm_path: this CPU cannot run '") + name +
                                    "' (best: '" + gemm_path_name(best_gemm_path()) + "')");
            return;
          }
        throw py::value_error(
            "_set_gemm_path: name must be 'blas', 'portable', 'avx2' or "
            "'avx512', got '" +
            name + "'");
      },
      py::arg("name"), "Choose the float32 recurrent-product kernel (for tests and benchmarks).");
  m.def(
      "_gemm_path", [] { return std::string(gemm_path_name(gemm_path())); },
      "The float32 recurrent-product kernel in use.");
  m.def("_pool_bytes", [] { return pool_bytes(); }, "Bytes held by the workspace pool.");
  m.def("_empty_pool", [] { return empty_pool(); }, "Free the workspace pool; returns bytes.");
}

// ------------------------------------------------------------------------------------------
// What every cell shares: validated arguments, the cache, output assembly
// ------------------------------------------------------------------------------------------

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

// The validated arguments of a forward call. G = gates (1 RNN, 4 LSTM, 3 GRU).
template <typename F>  // F, not T: T is the sequence length here
struct SeqArgs {
  CArray<F> x, w_ih, w_hh;   // x is empty for one-hot input
  CArray<std::int32_t> ids;  // (T, B) token ids for one-hot input, else empty
  bool one_hot = false;
  py::object h0, c0, b_ih, b_hh;  // None where absent
  idx T, B, D, H;
};

bool is_integer_array(py::handle obj) {
  if (!py::isinstance<py::array>(obj)) return false;
  const char k = py::reinterpret_borrow<py::array>(obj).dtype().kind();
  return k == 'i' || k == 'u';
}

// Every array is checked (type, dtype, shape) and every size limit before anything is copied:
// a broadcast view with T = 2^40 is refused without being materialised.
template <typename T>
SeqArgs<T> take_seq_args(Dims &d, DType dt, int G, py::handle x, py::handle h0, py::handle c0,
                         py::handle w_ih, py::handle w_hh, py::handle b_ih, py::handle b_hh,
                         bool with_c, bool training) {
  const std::string &fn = d.fn();
  const std::string gh = G == 1 ? "H" : std::to_string(G) + "H";
  const std::string s_ih = "of shape (" + gh + ", D)", s_hh = "of shape (" + gh + ", H)",
                    s_b = "of shape (" + gh + ",)";
  SeqArgs<T> a;
  py::array w_ih_a = peek<T>(fn, w_ih, "w_ih", s_ih.c_str(), dt);
  py::array w_hh_a = peek<T>(fn, w_hh, "w_hh", s_hh.c_str(), dt);
  d.check(w_ih_a, "w_ih", "GD");
  d.check(w_hh_a, "w_hh", "GH");
  py::array x_a = py::reinterpret_steal<py::array>(py::handle());
  if (is_integer_array(x)) {
    // One-hot input: x (T, B) holds token ids in [0, D), each standing for a one-hot row.
    x_a = py::reinterpret_borrow<py::array>(x);
    if (x_a.ndim() != 2)  // an integer (T, B, D) array is a dtype mistake, not token ids
      throw py::type_error(fn + ": x must have dtype " + dtype_name(dt) +
                           " (the dtype of the weights), or be a (T, B) integer array of token "
                           "ids; got " +
                           std::string(py::str(x_a.dtype())) + " of shape " +
                           shape_str(shape_of(x_a)));
    d.check(x_a, "x", "TB");
    a.one_hot = true;
  } else {
    x_a = peek<T>(fn, x, "x", "of shape (T, B, D), or integer ids of shape (T, B)", dt);
    d.check(x_a, "x", "TBD");
  }
  a.T = d['T'], a.B = d['B'], a.D = d['D'], a.H = d['H'];
  // Limits, before any copy: 32-bit BLAS sizes, then element counts that fit size_t, then
  // bytes that fit the machine.
  check_blas_dims(d, {'T', 'B', 'D', 'H'});
  if (G * a.H > INT_MAX)
    throw py::value_error(fn + ": " + gh + " = " + std::to_string(G * a.H) +
                          " exceeds the 32-bit BLAS limit " + std::to_string(INT_MAX));
  const idx rows = a.T * a.B;  // both <= INT_MAX: no overflow
  if (rows > INT_MAX)
    throw py::value_error(fn + ": T*B = " + std::to_string(a.T) + "*" + std::to_string(a.B) +
                          " = " + std::to_string(rows) + " exceeds the 32-bit BLAS limit " +
                          std::to_string(INT_MAX));
  const idx n_ws = checked_count(fn, {a.T + 1, a.B, G * a.H}, "the workspace (T+1)*B*" + gh);
  const idx n_w = checked_count(fn, {G * a.H, a.D + a.H + 2}, "the weights " + gh + "*(D+H+2)");
  const idx n_x = a.one_hot ? rows : checked_count(fn, {a.T, a.B, a.D}, "x (T*B*D)");
  {
    // What the call allocates at least: y, the weights' copies, x's copy at the boundary (when
    // not C-contiguous) and in the cache, the states and gates of the workspace.
    const bool x_copied = !a.one_hot && !(x_a.flags() & py::array::c_style);
    const bool workspace = training || G > 1 || a.one_hot;
    long double n = static_cast<long double>(rows) * a.H + n_w;
    if (x_copied) n += n_x;
    if (workspace) n += static_cast<long double>(n_x) + n_ws;
    check_fits(fn, n * sizeof(T),
               "T=" + std::to_string(a.T) + ", B=" + std::to_string(a.B) +
                   ", D=" + std::to_string(a.D) + ", H=" + std::to_string(a.H));
  }
  // Null handles (not py::array(), which is an empty array) where an argument is None.
  auto h0_a = py::reinterpret_steal<py::array>(py::handle()), c0_a = h0_a, bi_a = h0_a, bh_a = h0_a;
  if (!h0.is_none()) d.check(h0_a = peek<T>(fn, h0, "h0", "of shape (B, H)", dt), "h0", "BH");
  if (with_c && !c0.is_none())
    d.check(c0_a = peek<T>(fn, c0, "c0", "of shape (B, H)", dt), "c0", "BH");
  if (!b_ih.is_none()) d.check(bi_a = peek<T>(fn, b_ih, "b_ih", s_b.c_str(), dt), "b_ih", "G");
  if (!b_hh.is_none()) d.check(bh_a = peek<T>(fn, b_hh, "b_hh", s_b.c_str(), dt), "b_hh", "G");

  // Everything checked: now the copies (only where an array is not C-contiguous already).
  a.w_ih = contiguous<T>(w_ih_a);
  a.w_hh = contiguous<T>(w_hh_a);
  if (a.one_hot) {
    auto ids = ids_in_range(fn, x_a, "x", a.D);
    a.ids = CArray<std::int32_t>(std::vector<idx>{a.T, a.B});
    std::int32_t *out = a.ids.mutable_data();
    const std::int64_t *in = ids.data();
    for (idx i = 0; i < ids.size(); ++i) out[i] = static_cast<std::int32_t>(in[i]);
  } else {
    a.x = contiguous<T>(x_a);
  }
  a.h0 = h0_a ? py::object(contiguous<T>(h0_a)) : py::none();
  a.c0 = c0_a ? py::object(contiguous<T>(c0_a)) : py::none();
  a.b_ih = bi_a ? py::object(contiguous<T>(bi_a)) : py::none();
  a.b_hh = bh_a ? py::object(contiguous<T>(bh_a)) : py::none();
  return a;
}

// State shared by every cell's cache: copies of x and the (gate-blocked) weights, h_0..h_T.
struct SeqCache {
  DType dtype;
  idx T, B, D, H;
  bool has_b_ih, has_b_hh, one_hot;
  // (T,B,D) or, for one-hot input, ids (T,B); w_ih (G*H,D), or its transpose (D,G*H) for one-hot
  // input; w_hh (G*H,H); h_states (T+1,B,H) with slot 0 = h0.
  Block x, ids, w_ih, w_hh, h_states;
  std::size_t nbytes() const {
    return x.bytes() + ids.bytes() + w_ih.bytes() + w_hh.bytes() + h_states.bytes();
  }
  template <typename T>
  const T *x_ptr() const {
    return one_hot ? nullptr : x.as<T>();
  }
  const std::int32_t *ids_ptr() const { return one_hot ? ids.as<std::int32_t>() : nullptr; }
  std::string describe() const {
    return "T=" + std::to_string(T) + " B=" + std::to_string(B) + " D=" + std::to_string(D) +
           " H=" + std::to_string(H) + " " + dtype_name(dtype) + (one_hot ? " one-hot" : "");
  }
};

// Fill the shared part of a cache: copy x, re-lay the weights (G > 1) and put h0 in slot 0.
template <typename T>
void fill_cache(SeqCache &c, const SeqArgs<T> &a, DType dt, int G) {
  c.dtype = dt;
  c.T = a.T, c.B = a.B, c.D = a.D, c.H = a.H;
  c.has_b_ih = !a.b_ih.is_none();
  c.has_b_hh = !a.b_hh.is_none();
  c.one_hot = a.one_hot;
  const std::size_t sz = sizeof(T);
  if (a.one_hot)
    c.ids = Block(static_cast<std::size_t>(a.T * a.B) * sizeof(std::int32_t));
  else
    c.x = Block(static_cast<std::size_t>(a.T * a.B * a.D) * sz);
  c.w_ih = Block(static_cast<std::size_t>(G * a.H * a.D) * sz);
  c.w_hh = Block(static_cast<std::size_t>(G * a.H * a.H) * sz);
  c.h_states = Block(static_cast<std::size_t>((a.T + 1) * a.B * a.H) * sz);
}

// Copies done without the GIL: x, the weights (gate-blocked when G > 1), h0 (or zeros).
// The input side into the cache: x (or the ids) and w_ih, gate-blocked when G > 1 and
// transposed to (D, G*H) for one-hot input (common/input.h).
template <typename T>
void copy_input_side(SeqCache &c, const SeqArgs<T> &a, int G) {
  const idx N = G * a.H, D = a.D;
  if (a.one_hot)
    std::memcpy(c.ids.as<std::int32_t>(), a.ids.data(),
                static_cast<std::size_t>(a.T * a.B) * sizeof(std::int32_t));
  else
    std::memcpy(c.x.as<T>(), a.x.data(), static_cast<std::size_t>(a.T * a.B * D) * sizeof(T));
  Block blocked;
  const T *w = a.w_ih.data();  // (N, D) in the cell's row order
  if (G > 1) {
    blocked = Block(a.one_hot ? static_cast<std::size_t>(N * D) * sizeof(T) : 0);
    T *dst = a.one_hot ? blocked.as<T>() : c.w_ih.as<T>();
    block_gate_rows<T>(dst, a.w_ih.data(), GateBlocks{int(a.H), G}, D);
    w = dst;
  }
  T *out = c.w_ih.as<T>();
  if (a.one_hot) {
    for (idx r = 0; r < N; ++r)
      for (idx d = 0; d < D; ++d) out[d * N + r] = w[r * D + d];
  } else if (G == 1) {
    std::memcpy(out, w, static_cast<std::size_t>(N * D) * sizeof(T));
  }
}

template <typename T>
void copy_inputs(SeqCache &c, T *h0_dst, const SeqArgs<T> &a, const T *h0, int G) {
  copy_input_side<T>(c, a, G);
  T *w_hh_dst = c.w_hh.as<T>();
  if (G == 1)
    std::memcpy(w_hh_dst, a.w_hh.data(), static_cast<std::size_t>(a.H * a.H) * sizeof(T));
  else
    block_gate_rows<T>(w_hh_dst, a.w_hh.data(), GateBlocks{int(a.H), G}, a.H);
  const std::size_t bh = static_cast<std::size_t>(a.B * a.H) * sizeof(T);
  if (h0)
    std::memcpy(h0_dst, h0, bh);
  else
    std::memset(h0_dst, 0, bh);
}

// b_ih + b_hh (zeros where absent), gate-blocked when G > 1: (G*H).
template <typename T>
Block combined_bias(const SeqArgs<T> &a, int G) {
  const idx n = G * a.H;
  Block sum(static_cast<std::size_t>(n) * sizeof(T)), out(static_cast<std::size_t>(n) * sizeof(T));
  const T *bi = ptr_or_null<T>(a.b_ih), *bh = ptr_or_null<T>(a.b_hh);
  for (idx j = 0; j < n; ++j) sum.as<T>()[j] = (bi ? bi[j] : T(0)) + (bh ? bh[j] : T(0));
  if (G == 1) return sum;
  block_gate_rows<T>(out.as<T>(), sum.as<T>(), GateBlocks{int(a.H), G}, 1);
  return out;
}

// The cache argument of a backward call, or a TypeError naming what came instead.
template <typename Cache>
const Cache &cache_arg(py::handle cache, const char *fn, const char *cls, const char *fwd) {
  if (!py::isinstance<Cache>(cache))
    throw py::type_error(
        std::string(fn) + ": cache must be the " + cls + " returned by " + fwd +
        "(..., training=True), got " +
        (cache.is_none() ? "None (was the forward run with training=False?)" : type_name(cache)));
  return cache.cast<const Cache &>();
}

// Upstream gradients of a backward call, checked against the cache.
template <typename T>
py::object take_grad(Dims &d, const SeqCache &c, py::handle g, const char *name, const char *spec) {
  const std::string what = std::string("of shape ") + (spec[0] == 'T' ? "(T, B, H)" : "(B, H)");
  return take_optional<T>(d, g, name, what.c_str(), spec, c.dtype);
}

Dims cache_dims(const char *fn, const SeqCache &c) {
  Dims d(fn);
  d.dtype_src = "the cache";
  d.bind('T', c.T, "the cache");
  d.bind('B', c.B, "the cache");
  d.bind('H', c.H, "the cache");
  return d;
}

// dx of a backward call: a new (T, B, D) array, or for one-hot input (no dx) None and a
// (D, N) scratch block the kernel uses instead.
template <typename T>
std::pair<py::object, Block> dx_or_scratch(const SeqCache &c, idx N, T **ptr) {
  if (c.one_hot) {
    Block scratch(static_cast<std::size_t>(c.D * N) * sizeof(T));
    *ptr = scratch.as<T>();
    return {py::none(), std::move(scratch)};
  }
  auto dx = new_array<T>({c.T, c.B, c.D});
  *ptr = dx.mutable_data();
  return {dx, Block()};
}

// (db_ih, db_hh) from the one bias gradient db: the same values, separate arrays.
template <typename T>
std::pair<py::object, py::object> split_bias_grad(const SeqCache &c, py::array_t<T> db) {
  py::object db_ih = py::none(), db_hh = py::none();
  if (c.has_b_ih) db_ih = db;
  if (c.has_b_hh) {
    if (c.has_b_ih) {
      auto copy = new_array<T>({db.size()});
      std::memcpy(copy.mutable_data(), db.data(), static_cast<std::size_t>(db.size()) * sizeof(T));
      db_hh = copy;
    } else {
      db_hh = db;
    }
  }
  return {db_ih, db_hh};
}

template <typename Cache>
py::class_<Cache> bind_cache(py::module_ &m, const char *name, const char *doc) {
  py::class_<Cache> cls(m, name, doc);
  cls.def_property_readonly(
         "shape", [](const Cache &c) { return py::make_tuple(c.T, c.B, c.D, c.H); }, "(T, B, D, H)")
      .def_property_readonly("dtype", [](const Cache &c) { return py::dtype(dtype_name(c.dtype)); })
      .def_property_readonly("nbytes", &Cache::nbytes, "Bytes of workspace held.")
      .def("__repr__",
           [name](const Cache &c) { return std::string("<") + name + " " + c.describe() + ">"; });
  return cls;
}

DType call_dtype(const std::string &fn, py::handle w_ih) {
  return dtype_from(fn, w_ih, "w_ih");
}

// A bool option: True/False (or NumPy's bool_), nothing else, so a misplaced argument cannot
// turn into a silent truthiness test.
bool flag(const std::string &fn, py::handle v, const char *name) {
  if (py::isinstance<py::bool_>(v)) return v.cast<bool>();
  if (py::hasattr(v, "dtype") && py::str(v.attr("dtype")).cast<std::string>() == "bool")
    return v.attr("__bool__")().cast<bool>();
  throw py::type_error(fn + ": " + name + " must be True or False, got " + type_name(v));
}

// ------------------------------------------------------------------------------------------
// Vanilla RNN
// ------------------------------------------------------------------------------------------

struct RnnCache : SeqCache {
  Activation act;
  std::size_t nbytes() const { return SeqCache::nbytes(); }
  std::string describe() const {
    return SeqCache::describe() + (act == Activation::Tanh ? " tanh" : " relu");
  }
};

template <typename T>
py::tuple rnn_forward_impl(const SeqArgs<T> &a, DType dt, Activation act, bool training) {
  const idx Tn = a.T, B = a.B, D = a.D, H = a.H, BH = B * H;
  Block bias = combined_bias(a, 1);
  auto y = new_array<T>({Tn, B, H});
  auto h_n = new_array<T>({B, H});
  const T *h0 = ptr_or_null<T>(a.h0);
  T *yp = y.mutable_data(), *hnp = h_n.mutable_data();
  if (!training && !a.one_hot) {  // nothing to keep: straight from the arguments
    Block zeros(h0 ? 0 : static_cast<std::size_t>(BH) * sizeof(T));
    {
      ComputeScope nogil;
      if (!h0) {
        std::memset(zeros.as<T>(), 0, zeros.bytes());
        h0 = zeros.as<T>();
      }
      rnn_forward<T>(yp, a.x.data(), nullptr, h0, a.w_ih.data(), a.w_hh.data(), bias.as<T>(), act,
                     int(Tn), int(B), int(D), int(H));
      std::memcpy(hnp, Tn > 0 ? yp + (Tn - 1) * BH : h0, static_cast<std::size_t>(BH) * sizeof(T));
    }
    return py::make_tuple(y, h_n, py::none());  // with the GIL again
  }
  auto c = std::make_unique<RnnCache>();
  fill_cache(*c, a, dt, 1);
  c->act = act;
  {
    ComputeScope nogil;
    T *hs = c->h_states.as<T>();
    copy_inputs<T>(*c, hs, a, h0, 1);
    rnn_forward<T>(hs + BH, c->x_ptr<T>(), c->ids_ptr(), hs, c->w_ih.as<T>(), c->w_hh.as<T>(),
                   bias.as<T>(), act, int(Tn), int(B), int(D), int(H));
    std::memcpy(yp, hs + BH, static_cast<std::size_t>(Tn * BH) * sizeof(T));
    std::memcpy(hnp, hs + Tn * BH, static_cast<std::size_t>(BH) * sizeof(T));
  }
  return py::make_tuple(y, h_n, training ? py::cast(std::move(c)) : py::none());
}

py::tuple rnn_forward_py(py::handle x, py::handle h0, py::handle w_ih, py::handle w_hh,
                         py::handle b_ih, py::handle b_hh, py::handle nonlinearity,
                         py::handle training_) {
  const std::string fn = "rnn_forward";
  const bool training = flag(fn, training_, "training");
  if (!py::isinstance<py::str>(nonlinearity))
    throw py::type_error(fn + ": nonlinearity must be 'tanh' or 'relu', got " +
                         type_name(nonlinearity));
  const std::string nl = nonlinearity.cast<std::string>();
  if (nl != "tanh" && nl != "relu")
    throw py::value_error(fn + ": nonlinearity must be 'tanh' or 'relu', got '" + nl + "'");
  const Activation act = nl == "tanh" ? Activation::Tanh : Activation::Relu;
  const DType dt = call_dtype(fn, w_ih);
  Dims d(fn, 1);
  if (dt == DType::F32)
    return rnn_forward_impl<float>(
        take_seq_args<float>(d, dt, 1, x, h0, {}, w_ih, w_hh, b_ih, b_hh, false, training), dt, act,
        training);
  return rnn_forward_impl<double>(
      take_seq_args<double>(d, dt, 1, x, h0, {}, w_ih, w_hh, b_ih, b_hh, false, training), dt, act,
      training);
}

template <typename T>
py::tuple rnn_backward_impl(const RnnCache &c, py::handle dy_, py::handle dh_n_) {
  Dims d = cache_dims("rnn_backward", c);
  py::object dy = take_grad<T>(d, c, dy_, "dy", "TBH");
  py::object dh_n = take_grad<T>(d, c, dh_n_, "dh_n", "BH");
  const idx Tn = c.T, B = c.B, D = c.D, H = c.H;
  T *dxp = nullptr;
  auto [dx, dx_scratch] = dx_or_scratch<T>(c, H, &dxp);
  auto dh0 = new_array<T>({B, H});
  auto dw_ih = new_array<T>({H, D});
  auto dw_hh = new_array<T>({H, H});
  auto db = new_array<T>({H});
  Block dpre(static_cast<std::size_t>(Tn * B * H) * sizeof(T));
  {
    const T *dyp = ptr_or_null<T>(dy), *dhp = ptr_or_null<T>(dh_n);
    T *dh0p = dh0.mutable_data(), *dwi = dw_ih.mutable_data(), *dwh = dw_hh.mutable_data(),
      *dbp = db.mutable_data();
    ComputeScope nogil;
    rnn_backward<T>(dxp, dh0p, dwi, dwh, dbp, dpre.as<T>(), dyp, dhp, c.h_states.as<T>(),
                    c.x_ptr<T>(), c.ids_ptr(), c.w_ih.as<T>(), c.w_hh.as<T>(), c.act, int(Tn),
                    int(B), int(D), int(H));
  }
  auto [db_ih, db_hh] = split_bias_grad<T>(c, db);
  return py::make_tuple(dx, dh0, dw_ih, dw_hh, db_ih, db_hh);
}

py::tuple rnn_backward_py(py::handle dy, py::handle dh_n, py::handle cache) {
  const auto &c = cache_arg<RnnCache>(cache, "rnn_backward", "RNNCache", "rnn_forward");
  if (c.dtype == DType::F32) return rnn_backward_impl<float>(c, dy, dh_n);
  return rnn_backward_impl<double>(c, dy, dh_n);
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
    training: keep what backward needs and return it as ``cache``; False returns None.

Returns:
    y: (T, B, H) every step's state h_1..h_T.
    h_n: (B, H) the final state h_T.
    cache: an opaque RNNCache for rnn_backward (or None). It holds copies of x and the
        weights, so later in-place changes to them do not affect the backward pass.

Raises:
    TypeError: an argument is not an array of the call's dtype, or is None where required.
    ValueError: a shape does not match (the message names the argument and the expected size),
        or a size exceeds the 32-bit BLAS limit or the 2^59-element workspace limit.
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
    dx is None when the forward's x was token ids (one-hot input).
)doc";

void bind_rnn(py::module_ &m) {
  bind_cache<RnnCache>(m, "RNNCache",
                       "Opaque workspace of rnn_forward(training=True), consumed by rnn_backward.")
      .def_property_readonly("nonlinearity", [](const RnnCache &c) {
        return c.act == Activation::Tanh ? "tanh" : "relu";
      });
  m.def("rnn_forward", &rnn_forward_py, py::arg("x"), py::arg("h0"), py::arg("w_ih"),
        py::arg("w_hh"), py::arg("b_ih") = py::none(), py::arg("b_hh") = py::none(), py::kw_only(),
        py::arg("nonlinearity") = "tanh", py::arg("training") = py::bool_(true), kRnnForwardDoc);
  m.def("rnn_backward", &rnn_backward_py, py::arg("dy"), py::arg("dh_n"), py::arg("cache"),
        kRnnBackwardDoc);
}

// ------------------------------------------------------------------------------------------
// LSTM
// ------------------------------------------------------------------------------------------

struct LstmCache : SeqCache {
  Block c_states, gates;  // (T+1,B,H) slot 0 = c0; (T,B,4H) activated gates, blocked
  std::size_t nbytes() const { return SeqCache::nbytes() + c_states.bytes() + gates.bytes(); }
  std::string describe() const { return SeqCache::describe(); }
};

template <typename T>
py::tuple lstm_forward_impl(const SeqArgs<T> &a, DType dt, bool training) {
  constexpr int G = 4;
  const idx Tn = a.T, B = a.B, D = a.D, H = a.H, BH = B * H;
  const std::size_t sz = sizeof(T);
  Block bias = combined_bias(a, G);
  auto y = new_array<T>({Tn, B, H});
  auto h_n = new_array<T>({B, H});
  auto c_n = new_array<T>({B, H});
  const T *h0 = ptr_or_null<T>(a.h0), *c0 = ptr_or_null<T>(a.c0);
  // Inference keeps nothing: the same workspace lives only for this call.
  auto c = std::make_unique<LstmCache>();
  fill_cache(*c, a, dt, G);
  c->c_states = Block(static_cast<std::size_t>((Tn + 1) * BH) * sz);
  c->gates = Block(static_cast<std::size_t>(Tn * B * G * H) * sz);
  {
    T *yp = y.mutable_data(), *hnp = h_n.mutable_data(), *cnp = c_n.mutable_data();
    ComputeScope nogil;
    T *hs = c->h_states.as<T>(), *cs = c->c_states.as<T>();
    copy_inputs<T>(*c, hs, a, h0, G);
    if (c0)
      std::memcpy(cs, c0, static_cast<std::size_t>(BH) * sz);
    else
      std::memset(cs, 0, static_cast<std::size_t>(BH) * sz);
    lstm_forward<T>(hs + BH, cs + BH, c->gates.as<T>(), c->x_ptr<T>(), c->ids_ptr(), hs, cs,
                    c->w_ih.as<T>(), c->w_hh.as<T>(), bias.as<T>(), int(Tn), int(B), int(D),
                    int(H));
    std::memcpy(yp, hs + BH, static_cast<std::size_t>(Tn * BH) * sz);
    std::memcpy(hnp, hs + Tn * BH, static_cast<std::size_t>(BH) * sz);
    std::memcpy(cnp, cs + Tn * BH, static_cast<std::size_t>(BH) * sz);
  }
  py::object cache = training ? py::cast(std::move(c)) : py::none();
  return py::make_tuple(y, h_n, c_n, cache);
}

py::tuple lstm_forward_py(py::handle x, py::handle h0, py::handle c0, py::handle w_ih,
                          py::handle w_hh, py::handle b_ih, py::handle b_hh, py::handle training_) {
  const std::string fn = "lstm_forward";
  const bool training = flag(fn, training_, "training");
  const DType dt = call_dtype(fn, w_ih);
  Dims d(fn, 4);
  if (dt == DType::F32)
    return lstm_forward_impl<float>(
        take_seq_args<float>(d, dt, 4, x, h0, c0, w_ih, w_hh, b_ih, b_hh, true, training), dt,
        training);
  return lstm_forward_impl<double>(
      take_seq_args<double>(d, dt, 4, x, h0, c0, w_ih, w_hh, b_ih, b_hh, true, training), dt,
      training);
}

template <typename T>
py::tuple lstm_backward_impl(const LstmCache &c, py::handle dy_, py::handle dh_n_,
                             py::handle dc_n_) {
  constexpr int G = 4;
  Dims d = cache_dims("lstm_backward", c);
  py::object dy = take_grad<T>(d, c, dy_, "dy", "TBH");
  py::object dh_n = take_grad<T>(d, c, dh_n_, "dh_n", "BH");
  py::object dc_n = take_grad<T>(d, c, dc_n_, "dc_n", "BH");
  const idx Tn = c.T, B = c.B, D = c.D, H = c.H;
  const std::size_t sz = sizeof(T);
  T *dxp = nullptr;
  auto [dx, dx_scratch] = dx_or_scratch<T>(c, G * H, &dxp);
  auto dh0 = new_array<T>({B, H});
  auto dc0 = new_array<T>({B, H});
  auto dw_ih = new_array<T>({G * H, D});
  auto dw_hh = new_array<T>({G * H, H});
  auto db = new_array<T>({G * H});
  Block dgates(static_cast<std::size_t>(Tn * B * G * H) * sz);
  Block dw_scratch(static_cast<std::size_t>(G * H * (D + H + 1)) * sz);
  Block dh(static_cast<std::size_t>(B * H) * sz);
  {
    const T *dyp = ptr_or_null<T>(dy), *dhp = ptr_or_null<T>(dh_n), *dcp = ptr_or_null<T>(dc_n);
    T *dh0p = dh0.mutable_data(), *dc0p = dc0.mutable_data(), *dwi = dw_ih.mutable_data(),
      *dwh = dw_hh.mutable_data(), *dbp = db.mutable_data();
    ComputeScope nogil;
    lstm_backward<T>(dxp, dh0p, dc0p, dwi, dwh, dbp, dgates.as<T>(), dw_scratch.as<T>(), dh.as<T>(),
                     dyp, dhp, dcp, c.h_states.as<T>(), c.c_states.as<T>(), c.gates.as<T>(),
                     c.x_ptr<T>(), c.ids_ptr(), c.w_ih.as<T>(), c.w_hh.as<T>(), int(Tn), int(B),
                     int(D), int(H));
  }
  auto [db_ih, db_hh] = split_bias_grad<T>(c, db);
  return py::make_tuple(dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh);
}

py::tuple lstm_backward_py(py::handle dy, py::handle dh_n, py::handle dc_n, py::handle cache) {
  const auto &c = cache_arg<LstmCache>(cache, "lstm_backward", "LSTMCache", "lstm_forward");
  if (c.dtype == DType::F32) return lstm_backward_impl<float>(c, dy, dh_n, dc_n);
  return lstm_backward_impl<double>(c, dy, dh_n, dc_n);
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
    training: keep what backward needs and return it as ``cache``; False returns None.

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

Returns:
    (dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh) with shapes (T, B, D), (B, H), (B, H),
    (4H, D), (4H, H), (4H,), (4H,); db_ih / db_hh are None where that bias was None.
    dx is None when the forward's x was token ids (one-hot input).
)doc";

void bind_lstm(py::module_ &m) {
  bind_cache<LstmCache>(m, "LSTMCache",
                        "Opaque workspace of lstm_forward(training=True), consumed by "
                        "lstm_backward.");
  m.def("lstm_forward", &lstm_forward_py, py::arg("x"), py::arg("h0"), py::arg("c0"),
        py::arg("w_ih"), py::arg("w_hh"), py::arg("b_ih") = py::none(),
        py::arg("b_hh") = py::none(), py::kw_only(), py::arg("training") = py::bool_(true),
        kLstmForwardDoc);
  m.def("lstm_backward", &lstm_backward_py, py::arg("dy"), py::arg("dh_n"), py::arg("dc_n"),
        py::arg("cache"), kLstmBackwardDoc);
}

// ------------------------------------------------------------------------------------------
// GRU
// ------------------------------------------------------------------------------------------

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
  const DType dt = call_dtype(fn, w_ih);
  Dims d(fn, 3);
  if (dt == DType::F32)
    return gru_forward_impl<float>(
        take_seq_args<float>(d, dt, 3, x, h0, {}, w_ih, w_hh, b_ih, b_hh, false, training), dt,
        reset_after, training);
  return gru_forward_impl<double>(
      take_seq_args<double>(d, dt, 3, x, h0, {}, w_ih, w_hh, b_ih, b_hh, false, training), dt,
      reset_after, training);
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
  if (c.dtype == DType::F32) return gru_backward_impl<float>(c, dy, dh_n);
  return gru_backward_impl<double>(c, dy, dh_n);
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

// ------------------------------------------------------------------------------------------
// Language model: the fused output layer and the sampling loop
// ------------------------------------------------------------------------------------------

template <typename T>
py::tuple softmax_xent_impl(const std::string &fn, py::handle logits_, py::handle targets_,
                            bool grad, DType dt) {
  Dims d(fn);
  d.dtype_src = "logits";
  auto logits = take<T>(d, logits_, "logits", "of shape (N, V)", "NV", dt);
  if (d['V'] < 1) throw py::value_error(fn + ": logits must have V >= 1 columns, got 0");
  auto y = take_ids(d, targets_, "targets", d['V'], "N");
  const idx N = d['N'], V = d['V'];
  checked_count(fn, {N, V}, "logits");
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
    if (N > 0)
      softmax_xent<T>(row_loss.mutable_data(), dp, logits.data(), y.data(), T(1) / T(N), N,
                      static_cast<int>(V));
  }
  double total = 0.0;
  for (idx n = 0; n < N; ++n) total += static_cast<double>(row_loss.data()[n]);
  return py::make_tuple(N > 0 ? total / N : 0.0, dlogits);
}

py::tuple softmax_xent_py(py::handle logits, py::handle targets, py::handle grad_) {
  const std::string fn = "softmax_cross_entropy";
  const bool grad = flag(fn, grad_, "grad");
  if (dtype_from(fn, logits, "logits") == DType::F32)
    return softmax_xent_impl<float>(fn, logits, targets, grad, DType::F32);
  return softmax_xent_impl<double>(fn, logits, targets, grad, DType::F64);
}

template <typename T>
py::tuple linear_xent_impl(const std::string &fn, py::handle h_, py::handle w_, py::handle b_,
                           py::handle targets_, bool grad, DType dt) {
  Dims d(fn);
  d.dtype_src = "w";
  auto w = take<T>(d, w_, "w", "of shape (V, H)", "VH", dt);
  auto h = take<T>(d, h_, "h", "of shape (N, H)", "NH", dt);
  py::object b = take_optional<T>(d, b_, "b", "of shape (V,)", "V", dt);
  if (d['V'] < 1) throw py::value_error(fn + ": w must have V >= 1 rows, got 0");
  auto y = take_ids(d, targets_, "targets", d['V'], "N");
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
                          ptr_or_null<T>(b), y.data(), int(N), int(H), int(V));
  }
  return py::make_tuple(loss, dh, dw, db);
}

py::tuple linear_xent_py(py::handle h, py::handle w, py::handle b, py::handle targets,
                         py::handle grad_) {
  const std::string fn = "linear_cross_entropy";
  const bool grad = flag(fn, grad_, "grad");
  if (dtype_from(fn, w, "w") == DType::F32)
    return linear_xent_impl<float>(fn, h, w, b, targets, grad, DType::F32);
  return linear_xent_impl<double>(fn, h, w, b, targets, grad, DType::F64);
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
py::array_t<std::int32_t> sample_impl(const std::string &fn, CellKind kind, py::list layers,
                                      py::handle embedding, py::handle w_out_, py::handle b_out_,
                                      py::handle h_, py::handle c_, py::handle prime_, idx n,
                                      const SampleOptions &opt, py::handle rng_, DType dt) {
  const int G = cell_gates(kind);
  Dims d(fn, G);
  d.dtype_src = "w_out";
  auto w_out = take<T>(d, w_out_, "w_out", "of shape (V, H)", "VH", dt);
  py::object b_out = take_optional<T>(d, b_out_, "b_out", "of shape (V,)", "V", dt);
  const idx V = d['V'], H = d['H'], L = static_cast<idx>(layers.size());
  if (V < 1 || H < 1 || L < 1)
    throw py::value_error(fn + ": need V >= 1, H >= 1 and at least one layer");
  std::vector<py::object> keep;  // converted arrays, alive for the call
  SampleModel<T> m{kind, int(H), int(V), {}, nullptr, nullptr, nullptr};
  py::object emb = take_optional<T>(d, embedding, "embedding", "of shape (V, E)", "VE", dt);
  if (!emb.is_none()) {
    m.embedding = emb.cast<CArray<T>>().data();
  }
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
  T *h = inout<T>(fn, h_, "h", L, H);
  T *c = kind == CellKind::Lstm ? inout<T>(fn, c_, "c", L, H) : nullptr;
  py::array prime_a = peek_ids(fn, prime_, "prime");
  if (prime_a.ndim() != 1 || prime_a.size() < 1)
    throw py::value_error(fn + ": prime must be a 1-D array of at least one token id, got shape " +
                          shape_str(shape_of(prime_a)));
  auto prime = ids_in_range(fn, prime_a, "prime", V);
  if (!py::isinstance<py::array_t<std::uint64_t>>(rng_) || py::cast<py::array>(rng_).size() != 4 ||
      !py::cast<py::array>(rng_).writeable() ||
      !(py::cast<py::array>(rng_).flags() & py::array::c_style))
    throw py::type_error(fn +
                         ": rng_state must be a writeable C-contiguous uint64 array of 4 "
                         "elements, got " +
                         type_name(rng_));
  auto rs = py::reinterpret_borrow<py::array_t<std::uint64_t>>(rng_);
  py::array_t<std::int32_t> out(n);
  {
    ComputeScope nogil;
    sample_loop<T>(m, h, c, prime.data(), prime.size(), n, opt, Rng{rs.mutable_data()},
                   out.mutable_data());
  }
  return out;
}

py::array_t<std::int32_t> sample_py(const std::string &cell, py::list layers, py::handle embedding,
                                    py::handle w_out, py::handle b_out, py::handle h, py::handle c,
                                    py::handle prime, long long n, double temperature, int top_k,
                                    bool greedy, py::handle rng_state) {
  const std::string fn = "_sample_loop";
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
  if (n < 0) throw py::value_error(fn + ": n must be >= 0, got " + std::to_string(n));
  if (!(temperature > 0) || !std::isfinite(temperature))
    throw py::value_error(fn + ": temperature must be a finite number > 0, got " +
                          std::to_string(temperature));
  if (top_k < 0) throw py::value_error(fn + ": top_k must be >= 0, got " + std::to_string(top_k));
  const SampleOptions opt{temperature, top_k, greedy};
  if (dtype_from(fn, w_out, "w_out") == DType::F32)
    return sample_impl<float>(fn, it->second, layers, embedding, w_out, b_out, h, c, prime, n, opt,
                              rng_state, DType::F32);
  return sample_impl<double>(fn, it->second, layers, embedding, w_out, b_out, h, c, prime, n, opt,
                             rng_state, DType::F64);
}

const char *kSoftmaxXentDoc = R"doc(Fused, numerically stable softmax + cross-entropy.

Args:
    logits: (N, V) float32 or float64 scores (any N >= 0, V >= 1).
    targets: (N,) integer token ids in [0, V).
    grad: also return the gradient.

Returns:
    (loss, dlogits): loss the mean over the N rows of logsumexp(logits_n) - logits_n[target_n]
    in nats (a Python float; 0.0 for N = 0); dlogits (N, V) = (softmax(logits) - onehot) / N,
    or None with grad=False. A NaN in a row makes that row's loss (so the mean) NaN and leaves
    the other rows' gradients finite.
)doc";

const char *kLinearXentDoc = R"doc(The language model's output layer in one call: logits = h wᵀ + b,
softmax cross-entropy against targets, and its backward.

Args:
    h: (N, H) hidden states (T*B positions, one row each).
    w: (V, H) projection weight (nn.Linear's layout); the call's dtype comes from it.
    b: (V,) bias, or None.
    targets: (N,) integer ids in [0, V).
    grad: compute the gradients too (False: the loss only, no (N, V) gradient pass).

Returns:
    (loss, dh, dw, db): the mean cross-entropy in nats (float); dh (N, H), dw (V, H), db (V,)
    its gradients (new arrays, not accumulated), or None with grad=False (db also None when b
    is None). Threaded over rows (logits, softmax, dh) and vocabulary entries (dw, db); the
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
  return dt == DType::F32 ? run(0.0f) : run(0.0);
}

void bind_lm(py::module_ &m) {
  m.def("_matmul", &matmul_py, py::arg("a"), py::arg("b"), py::arg("trans_a") = false,
        py::arg("trans_b") = false,
        "Private: op(a) @ op(b) on rnncore's BLAS, one thread (small products of the model).");
  m.def("softmax_cross_entropy", &softmax_xent_py, py::arg("logits"), py::arg("targets"),
        py::kw_only(), py::arg("grad") = py::bool_(true), kSoftmaxXentDoc);
  m.def("linear_cross_entropy", &linear_xent_py, py::arg("h"), py::arg("w"), py::arg("b"),
        py::arg("targets"), py::kw_only(), py::arg("grad") = py::bool_(true), kLinearXentDoc);
  m.def("_sample_loop", &sample_py, py::arg("cell"), py::arg("layers"), py::arg("embedding"),
        py::arg("w_out"), py::arg("b_out"), py::arg("h"), py::arg("c"), py::arg("prime"),
        py::arg("n"), py::arg("temperature"), py::arg("top_k"), py::arg("greedy"),
        py::arg("rng_state"),
        "Private: the sampling loop behind rnncore.sample (see lm/sample.h). Feeds prime, "
        "draws n ids; h (L, H), c (L, H) (LSTM) and rng_state (4,) uint64 are updated in "
        "place.");
}

}  // namespace

namespace rnncore {
void bind_probe(py::module_ &m);  // probe.cpp
}

PYBIND11_MODULE(_core, m) {
  m.doc() = "rnncore's compiled kernels (private: use the rnncore package).";
  init_threading();
  bind_runtime(m);
  bind_rnn(m);
  bind_lstm(m);
  bind_gru(m);
  bind_lm(m);
  bind_probe(m);
#ifdef RNNCORE_VERSION
  m.attr("__version__") = RNNCORE_VERSION;
#endif
}
