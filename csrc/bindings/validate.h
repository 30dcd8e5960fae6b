// The validation layer of the bindings: every argument is checked here (type, dtype, rank,
// shape, size limits) before anything is copied, and every message has one form:
//   "<caller>: <argument> must <expected>, got <what came>"
// The caller's name (the Python function) comes first, so one check serves every function.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace rnncore::bindings {

namespace py = pybind11;
using idx = std::ptrdiff_t;

template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

enum class DType { F32, F64 };

// f(float{}) or f(double{}) by the call's dtype: the one place a dtype becomes a C++ type.
template <typename F>
decltype(auto) dispatch(DType dt, F &&f) {
  if (dt == DType::F32) return f(float{});
  return f(double{});
}

const char *dtype_name(DType d);
std::string type_name(py::handle obj);
std::string shape_str(const std::vector<idx> &s);
std::vector<idx> shape_of(const py::array &a);

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

bool is_float_kind(const py::dtype &dt, int itemsize);

// The dtype of a call comes from its first weight. Lists are accepted (NumPy decides: floats
// give float64); anything that is not a float32/float64 array is a TypeError.
DType dtype_from(const std::string &fn, py::handle obj, const char *name);

// A bool option: True/False (or NumPy's bool_), nothing else, so a misplaced argument cannot
// turn into a silent truthiness test.
bool flag(const std::string &fn, py::handle v, const char *name);

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
py::array peek_ids(const std::string &fn, py::handle obj, const char *name);

// Token ids whose shape has been checked, every value in [0, V) (the first bad value is named
// with its position), as int32 for the kernels: an int32 C-contiguous array is returned as it
// is (no copy); any other integer array is converted in exactly one copy.
CArray<std::int32_t> ids_in_range(const std::string &fn, const py::array &a, const char *name,
                                  idx V);

// Token ids of shape `spec` (checked before anything is copied), every value in [0, V). A float
// array is a TypeError (no silent truncation).
CArray<std::int32_t> take_ids(Dims &d, py::handle obj, const char *name, idx V, const char *spec);

// Product of sizes, refusing one whose bytes (at up to 16 per element) would overflow size_t.
idx checked_count(const std::string &fn, std::initializer_list<idx> dims, const std::string &what);

// A call that would need more than the machine's RAM and swap is a MemoryError before anything
// is allocated: with overcommit the allocation itself might succeed and the process be killed
// when the memory is touched.
void check_fits(const std::string &fn, long double bytes, const std::string &what);

// Sizes named by `letters` must fit the 32-bit BLAS interface.
void check_blas_dims(const Dims &d, std::initializer_list<char> letters);

}  // namespace rnncore::bindings
