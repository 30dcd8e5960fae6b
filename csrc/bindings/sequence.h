// What every cell's binding shares: the validated arguments of a forward call, the cache
// that carries a forward's workspace to its backward, and the assembly of the outputs.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "bindings/arrays.h"
#include "bindings/validate.h"
#include "common/sequence.h"
#include "common/workspace.h"

namespace rnncore::bindings {

// The validated arguments of a forward call. G = gates (1 RNN, 4 LSTM, 3 GRU).
template <typename F>  // F, not T: T is the sequence length here
struct SeqArgs {
  CArray<F> x, w_ih, w_hh;   // x is empty for one-hot input
  CArray<std::int32_t> ids;  // (T, B) token ids for one-hot input, else empty
  bool one_hot = false;
  py::object h0, c0, b_ih, b_hh;  // None where absent
  idx T, B, D, H;
  bool has_lengths = false;           // false also where every length is T and not reverse
  std::vector<std::int64_t> lengths;  // (B) values in [0, T]
  bool reverse = false;
};

inline bool is_integer_array(py::handle obj) {
  if (!py::isinstance<py::array>(obj)) return false;
  const char k = py::reinterpret_borrow<py::array>(obj).dtype().kind();
  return k == 'i' || k == 'u';
}

// The limits of a forward call, before any copy: 32-bit BLAS sizes, then element counts that fit
// size_t, then bytes that fit the machine.
inline void check_seq_limits(const Dims &d, int G, bool one_hot, bool x_contiguous, bool training,
                             std::size_t elem) {
  const std::string &fn = d.fn();
  const std::string gh = G == 1 ? "H" : std::to_string(G) + "H";
  const idx T = d['T'], B = d['B'], D = d['D'], H = d['H'];
  check_blas_dims(d, {'T', 'B', 'D', 'H'});
  if (G * H > INT_MAX)
    throw py::value_error(fn + ": " + gh + " = " + std::to_string(G * H) +
                          " exceeds the 32-bit BLAS limit " + std::to_string(INT_MAX));
  const idx rows = T * B;  // both <= INT_MAX: no overflow
  if (rows > INT_MAX)
    throw py::value_error(fn + ": T*B = " + std::to_string(T) + "*" + std::to_string(B) + " = " +
                          std::to_string(rows) + " exceeds the 32-bit BLAS limit " +
                          std::to_string(INT_MAX));
  const idx n_ws = checked_count(fn, {T + 1, B, G * H}, "the workspace (T+1)*B*" + gh);
  const idx n_w = checked_count(fn, {G * H, D + H + 2}, "the weights " + gh + "*(D+H+2)");
  const idx n_x = one_hot ? rows : checked_count(fn, {T, B, D}, "x (T*B*D)");
  // What the call allocates at least: y, the weights' copies, x's copy at the boundary (when
  // not C-contiguous) and in the cache, the states and gates of the workspace.
  const bool x_copied = !one_hot && !x_contiguous;
  const bool workspace = training || G > 1 || one_hot;
  long double n = static_cast<long double>(rows) * H + n_w;
  if (x_copied) n += n_x;
  if (workspace) n += static_cast<long double>(n_x) + n_ws;
  check_fits(fn, n * elem,
             "T=" + std::to_string(T) + ", B=" + std::to_string(B) + ", D=" + std::to_string(D) +
                 ", H=" + std::to_string(H));
}

// reverse=: a bool (Python's or NumPy's), else a TypeError in the reference's words.
inline bool reverse_arg(const std::string &fn, py::handle v) {
  if (py::isinstance<py::bool_>(v)) return v.cast<bool>();
  if (py::isinstance(v, py::module_::import("numpy").attr("bool_"))) return v.cast<bool>();
  throw py::type_error(fn + ": reverse must be a bool, got " + std::string(py::repr(v)) + " (" +
                       std::string(py::str(v.get_type().attr("__name__"))) + ")");
}

// lengths=: None, or (B,) integers in [0, T] (any integer dtype, or what NumPy makes one of);
// a TypeError or ValueError in the reference's words otherwise. Every length T without reverse
// is the call without lengths.
template <typename T>
void take_lengths(const std::string &fn, py::handle lengths, bool reverse, SeqArgs<T> &a) {
  a.reverse = reverse;
  a.has_lengths = reverse;  // reverse runs on the packed layout, lengths T or not
  if (lengths.is_none()) {
    if (reverse) a.lengths.assign(static_cast<std::size_t>(a.B), a.T);
    return;
  }
  const std::string B = std::to_string(a.B);
  py::object np = py::module_::import("numpy");
  // An empty list has no values to type it: it is an empty integer array (not float64's).
  const bool empty_seq =
      (py::isinstance<py::list>(lengths) || py::isinstance<py::tuple>(lengths)) &&
      py::len(lengths) == 0;
  py::array arr = empty_seq ? py::array(np.attr("zeros")(0, np.attr("int64")))
                            : py::array(np.attr("asarray")(lengths));
  const char kind = arr.dtype().kind();
  if (kind != 'i' && kind != 'u')
    throw py::type_error(fn + ": lengths must be an integer array of shape (" + B +
                         ",), got dtype " + std::string(py::str(arr.dtype())));
  if (arr.ndim() != 1 || arr.shape(0) != a.B)
    throw py::value_error(fn + ": lengths must have shape (B,) = (" + B + ",), got shape " +
                          std::string(py::str(arr.attr("shape"))));
  auto wide = py::array_t<std::int64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
  a.lengths.assign(wide.data(), wide.data() + a.B);
  bool all_t = true;
  for (idx i = 0; i < a.B; ++i) {
    const std::int64_t v = a.lengths[static_cast<std::size_t>(i)];
    if (v < 0 || v > a.T)
      throw py::value_error(fn + ": lengths must have values in [0, T] = [0, " +
                            std::to_string(a.T) + "], got lengths[" + std::to_string(i) +
                            "] = " + std::string(py::str(arr[py::int_(i)])));
    all_t = all_t && v == a.T;
  }
  a.has_lengths = reverse || !all_t;
}

// Every array is checked (type, dtype, shape) and every size limit before anything is copied:
// a broadcast view with T = 2^40 is refused without being materialised.
template <typename T>
SeqArgs<T> take_seq_args(Dims &d, DType dt, int G, py::handle x, py::handle h0, py::handle c0,
                         py::handle w_ih, py::handle w_hh, py::handle b_ih, py::handle b_hh,
                         bool with_c, bool training, py::handle lengths, bool reverse) {
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
  check_seq_limits(d, G, a.one_hot, (x_a.flags() & py::array::c_style) != 0, training, sizeof(T));
  take_lengths(fn, lengths, reverse, a);
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
    if (a.has_lengths) {  // the padding is never read, so not checked: zeros there, in a copy
      py::array wide = py::module_::import("numpy").attr("array")(x_a, "int64");
      auto *p = static_cast<std::int64_t *>(wide.mutable_data());
      for (idx t = 0; t < a.T; ++t)
        for (idx b = 0; b < a.B; ++b)
          if (t >= a.lengths[static_cast<std::size_t>(b)]) p[t * a.B + b] = 0;
      x_a = wide;
    }
    a.ids = ids_in_range(fn, x_a, "x", a.D);  // int32 C-contiguous: read as given
  } else {
    a.x = contiguous<T>(x_a);
  }
  a.h0 = h0_a ? py::object(contiguous<T>(h0_a)) : py::none();
  a.c0 = c0_a ? py::object(contiguous<T>(c0_a)) : py::none();
  a.b_ih = bi_a ? py::object(contiguous<T>(bi_a)) : py::none();
  a.b_hh = bh_a ? py::object(contiguous<T>(bh_a)) : py::none();
  return a;
}

// What every cell's cache holds: the sizes and flags of its forward, the one block of the
// cell's workspace (cells/*.h: <Cell>Workspace), carved again by the backward, and with lengths
// the packed layout (common/packing.h) in a block of its own.
struct SeqCache {
  DType dtype;
  idx T, B, D, H;
  bool has_b_ih, has_b_hh, one_hot;
  Block block;
  bool has_order = false;
  Block order_block;  // off (T+1), perm (B), len (B)
  SeqOrder order{};
  std::size_t nbytes() const { return block.bytes() + order_block.bytes(); }
  SeqSizes sizes() const { return {int(T), int(B), int(D), int(H), has_order ? &order : nullptr}; }
  void set_order(const std::vector<std::int64_t> &lengths, bool reverse) {
    order_block = Block(static_cast<std::size_t>(T + 1 + 2 * B) * sizeof(int));
    int *p = order_block.as<int>();
    order = make_order(p, p + T + 1, p + T + 1 + B, lengths.data(), int(T), int(B), reverse);
    has_order = true;
  }
  std::string describe() const {
    return "T=" + std::to_string(T) + " B=" + std::to_string(B) + " D=" + std::to_string(D) +
           " H=" + std::to_string(H) + " " + dtype_name(dtype) + (one_hot ? " one-hot" : "") +
           (has_order ? " lengths" : "") + (has_order && order.reverse ? " reverse" : "");
  }
  // The cell's workspace in the block (the layout its forward carved).
  template <typename Workspace>
  Workspace workspace() const {
    Carver at(block.as<void>());
    return Workspace::carve(at, sizes(), one_hot);
  }
};

template <typename T>
SeqSizes sizes_of(const SeqArgs<T> &a) {
  return {int(a.T), int(a.B), int(a.D), int(a.H)};
}

// The arguments as the cells take them (common/sequence.h): raw pointers, nullptr where absent.
template <typename T>
SeqInputs<T> inputs_of(const SeqArgs<T> &a) {
  return {a.one_hot ? nullptr : a.x.data(),
          a.one_hot ? a.ids.data() : nullptr,
          ptr_or_null<T>(a.h0),
          ptr_or_null<T>(a.c0),
          a.w_ih.data(),
          a.w_hh.data(),
          ptr_or_null<T>(a.b_ih),
          ptr_or_null<T>(a.b_hh)};
}

// A new cache for the forward's arguments, holding the cell's workspace (Workspace::carve).
template <typename Cache, typename Workspace, typename T>
std::unique_ptr<Cache> new_cache(const SeqArgs<T> &a, DType dt) {
  auto c = std::make_unique<Cache>();
  c->dtype = dt;
  c->T = a.T, c->B = a.B, c->D = a.D, c->H = a.H;
  c->has_b_ih = !a.b_ih.is_none();
  c->has_b_hh = !a.b_hh.is_none();
  c->one_hot = a.one_hot;
  c->block = carve_block<Workspace>(sizes_of(a), a.one_hot).block;
  if (a.has_lengths) c->set_order(a.lengths, a.reverse);
  return c;
}

// The backward's side of the packed layout (lengths): the upstream gradients packed (dy) and
// sorted (dh_n, dc_n) for the kernel, and the kernel's dx, dh0, dc0 put back in the caller's
// rows (dx zero in the padding). Without lengths every pointer passes through.
template <typename T>
class GradOrder {
  struct Bufs {
    T *dy, *dh_n, *dc_n;  // (N,H) packed, (B,H) sorted
    T *dx, *dh0, *dc0;    // (N,D) packed, (B,H) sorted
    static Bufs carve(Carver &c, SeqSizes n, bool one_hot) {
      const std::size_t TB = static_cast<std::size_t>(n.TB()),
                        BH = static_cast<std::size_t>(n.BH());
      T *dy = c.take<T>(TB * n.H), *dh_n = c.take<T>(BH), *dc_n = c.take<T>(BH);
      T *dx = one_hot ? nullptr : c.take<T>(TB * n.D);
      T *dh0 = c.take<T>(BH);
      return {dy, dh_n, dc_n, dx, dh0, c.take<T>(BH)};
    }
  };
  SeqSizes n_;
  Carved<Bufs> b_;

 public:
  GradOrder(SeqSizes n, bool one_hot) : n_(n) {
    if (n.order) b_ = carve_block<Bufs>(n, one_hot);
  }
  // What the kernel reads and writes in place of the caller's arrays (nullptr stays nullptr).
  const T *in(const T *p, int k) const {
    return n_.order && p ? (k == 0 ? b_.at.dy : k == 1 ? b_.at.dh_n : b_.at.dc_n) : p;
  }
  T *out(T *p, int k) const {
    return n_.order && p ? (k == 0 ? b_.at.dx : k == 1 ? b_.at.dh0 : b_.at.dc0) : p;
  }
  // Before the kernel (without the GIL): dy packed, dh_n and dc_n sorted.
  void pack(const T *dy, const T *dh_n, const T *dc_n) const {
    if (!n_.order) return;
    if (dy) pack_rows(b_.at.dy, dy, n_.H, *n_.order, n_.B);
    if (dh_n) sort_rows(b_.at.dh_n, dh_n, n_.H, *n_.order, n_.B);
    if (dc_n) sort_rows(b_.at.dc_n, dc_n, n_.H, *n_.order, n_.B);
  }
  // After it: dx, dh0, dc0 into the caller's arrays (nullptr: none).
  void unpack(T *dx, T *dh0, T *dc0) const {
    if (!n_.order) return;
    if (dx) unpack_rows(dx, b_.at.dx, n_.D, *n_.order, n_.T, n_.B);
    if (dh0) unsort_rows(dh0, b_.at.dh0, n_.H, *n_.order, n_.B);
    if (dc0) unsort_rows(dc0, b_.at.dc0, n_.H, *n_.order, n_.B);
  }
};

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

inline Dims cache_dims(const char *fn, const SeqCache &c) {
  Dims d(fn);
  d.dtype_src = "the cache";
  d.bind('T', c.T, "the cache");
  d.bind('B', c.B, "the cache");
  d.bind('H', c.H, "the cache");
  return d;
}

// dx of a backward call: a new (T, B, D) array, or None for one-hot input (no dx).
template <typename T>
py::object new_dx(const SeqCache &c, T **ptr) {
  *ptr = nullptr;
  if (c.one_hot) return py::none();
  auto dx = new_array<T>({c.T, c.B, c.D});
  *ptr = dx.mutable_data();
  return dx;
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

}  // namespace rnncore::bindings
