// What a binding hands back and how it runs: output arrays in Blocks (from the calling thread's
// current pool, where NumPy frees them back to: common/workspace.h), and the scope of a compute
// call.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <limits>
#include <new>
#include <vector>

#include "common/threading.h"
#include "common/workspace.h"

namespace rnncore::bindings {

namespace py = pybind11;
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
  auto *own = new Detached(blk.detach());
  py::capsule base(own, [](void *p) {
    auto *d = static_cast<Detached *>(p);
    release_block(*d);
    delete d;
  });
  return py::array_t<T>(shape, static_cast<T *>(own->ptr), base);
}

// The data of an optional array argument (already validated and C-contiguous), or nullptr.
template <typename T>
const T *ptr_or_null(const py::object &o) {
  return o.is_none() ? nullptr : py::cast<py::array_t<T, py::array::c_style>>(o).data();
}

}  // namespace rnncore::bindings
