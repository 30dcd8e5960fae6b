#include "bindings/validate.h"

#include <climits>
#include <cstdio>
#include <limits>

#ifdef __linux__
#include <sys/sysinfo.h>
#endif

namespace rnncore::bindings {

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

bool is_float_kind(const py::dtype &dt, int itemsize) {
  return dt.kind() == 'f' && dt.itemsize() == itemsize;
}

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

bool flag(const std::string &fn, py::handle v, const char *name) {
  if (py::isinstance<py::bool_>(v)) return v.cast<bool>();
  if (py::hasattr(v, "dtype") && py::str(v.attr("dtype")).cast<std::string>() == "bool")
    return v.attr("__bool__")().cast<bool>();
  throw py::type_error(fn + ": " + name + " must be True or False, got " + type_name(v));
}

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

namespace {

[[noreturn]] void bad_id(const std::string &fn, const char *name, idx V, long long v, idx i) {
  throw py::value_error(fn + ": " + name + " must hold ids in [0, " + std::to_string(V) +
                        "), got " + std::to_string(v) + " at flat position " + std::to_string(i));
}

// Range-check the ids of `a` (1-D or 2-D, any strides, element type Src) in C order, writing
// them as int32 into `out` (nullptr: check only).
template <typename Src>
void narrow_ids(std::int32_t *out, const py::array &a, const std::string &fn, const char *name,
                idx V) {
  const char *base = static_cast<const char *>(a.data());
  const idx n0 = a.ndim() == 2 ? a.shape(0) : 1, n1 = a.ndim() == 2 ? a.shape(1) : a.shape(0);
  const idx s0 = a.ndim() == 2 ? a.strides(0) : 0, s1 = a.ndim() == 2 ? a.strides(1) : a.strides(0);
  for (idx i = 0; i < n0; ++i)
    for (idx j = 0; j < n1; ++j) {
      const Src v = *reinterpret_cast<const Src *>(base + i * s0 + j * s1);
      // Compared as int64, as NumPy's conversion would (so a uint64 above 2^63 reads negative).
      const auto w = static_cast<long long>(v);
      if (w < 0 || w >= V) bad_id(fn, name, V, w, i * n1 + j);
      if (out) out[i * n1 + j] = static_cast<std::int32_t>(w);
    }
}

template <typename F>
bool with_int_type(const py::dtype &dt, F &&f) {
  const int size = static_cast<int>(dt.itemsize());
  if (dt.kind() == 'i') {
    if (size == 1) return f(std::int8_t{}), true;
    if (size == 2) return f(std::int16_t{}), true;
    if (size == 4) return f(std::int32_t{}), true;
    if (size == 8) return f(std::int64_t{}), true;
  } else if (dt.kind() == 'u') {
    if (size == 1) return f(std::uint8_t{}), true;
    if (size == 2) return f(std::uint16_t{}), true;
    if (size == 4) return f(std::uint32_t{}), true;
    if (size == 8) return f(std::uint64_t{}), true;
  }
  return false;
}

}  // namespace

CArray<std::int32_t> ids_in_range(const std::string &fn, const py::array &a, const char *name,
                                  idx V) {
  using api = py::detail::npy_api;
  const py::dtype dt = a.dtype();
  const bool native = dt.attr("isnative").cast<bool>();
  const bool aligned = (a.flags() & api::NPY_ARRAY_ALIGNED_) != 0;
  if (native && aligned && dt.kind() == 'i' && dt.itemsize() == 4 &&
      (a.flags() & py::array::c_style)) {  // read as it is: no copy
    const auto *p = static_cast<const std::int32_t *>(a.data());
    for (idx i = 0; i < a.size(); ++i)
      if (p[i] < 0 || p[i] >= V) bad_id(fn, name, V, p[i], i);
    return py::reinterpret_borrow<CArray<std::int32_t>>(a);
  }
  CArray<std::int32_t> out(shape_of(a));
  if (native && aligned && a.ndim() >= 1 && a.ndim() <= 2 && with_int_type(dt, [&](auto zero) {
        narrow_ids<decltype(zero)>(out.mutable_data(), a, fn, name, V);
      }))
    return out;
  // Anything else (byte-swapped, unaligned, other ranks): NumPy converts to int64 first.
  auto wide = contiguous<std::int64_t>(a);
  const std::int64_t *p = wide.data();
  std::int32_t *o = out.mutable_data();
  for (idx i = 0; i < wide.size(); ++i) {
    if (p[i] < 0 || p[i] >= V) bad_id(fn, name, V, p[i], i);
    o[i] = static_cast<std::int32_t>(p[i]);
  }
  return out;
}

CArray<std::int32_t> take_ids(Dims &d, py::handle obj, const char *name, idx V, const char *spec) {
  py::array a = peek_ids(d.fn(), obj, name);
  d.check(a, name, spec);
  return ids_in_range(d.fn(), a, name, V);
}

namespace {

std::string dims_str(std::initializer_list<idx> dims) {
  std::string out;
  for (idx d : dims) out += (out.empty() ? "" : "*") + std::to_string(d);
  return out;
}

}  // namespace

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

namespace {

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

}  // namespace

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

}  // namespace rnncore::bindings
