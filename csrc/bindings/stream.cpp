// _core._StepStream: see bindings/stream.h and common/stream.h.
#include "bindings/stream.h"

#include <string>

#include "bindings/validate.h"

namespace rnncore::bindings {

StepStream *stream_arg(const std::string &fn, const char *name, py::handle obj,
                       const py::dtype &dtype, std::ptrdiff_t T, std::ptrdiff_t B,
                       std::ptrdiff_t W) {
  if (obj.is_none()) return nullptr;
  if (!py::isinstance<PyStepStream>(obj))
    throw py::type_error(fn + ": " + name + " must be a _StepStream or None, got " +
                         std::string(py::str(py::type::of(obj).attr("__name__"))));
  auto &ps = obj.cast<PyStepStream &>();
  const auto &r = ps.rows;
  const std::string want = shape_str({T, B, W});
  if (!r.dtype().is(dtype) || r.ndim() != 3 || r.shape(0) != T || r.shape(1) != B ||
      r.shape(2) != W)
    throw py::value_error(fn + ": " + name + ".rows must be " + std::string(py::str(dtype)) +
                          " of shape " + want + ", got " + std::string(py::str(r.dtype())) +
                          " of shape " + shape_str(shape_of(r)));
  return &ps.s;
}

void check_stream_in(const std::string &fn, const StepStream *in) {
  if (in && in->failed.load())
    throw std::runtime_error(fn + ": the call writing stream_in failed, so its rows are not valid");
}

void bind_stream(py::module_ &m) {
  py::class_<PyStepStream, std::shared_ptr<PyStepStream>>(
      m, "_StepStream",
      "A (T, B, W) buffer one kernel call writes step by step (stream_out) while another reads "
      "it (stream_in), for the wavefront schedule of a stack (rnncore.wavefront). Internal.")
      .def(py::init([](py::array rows, py::object mask) {
             const bool ok = (rows.dtype().is(py::dtype::of<float>()) ||
                              rows.dtype().is(py::dtype::of<double>())) &&
                             rows.ndim() == 3 && (rows.flags() & py::array::c_style) &&
                             rows.writeable();
             if (!ok)
               throw py::value_error(
                   "_StepStream: rows must be a writable C-contiguous float32 or float64 array "
                   "of shape (T, B, W), got " +
                   std::string(py::str(rows.dtype())) + " of shape " + shape_str(shape_of(rows)) +
                   (rows.flags() & py::array::c_style ? "" : ", not C-contiguous") +
                   (rows.writeable() ? "" : ", read-only"));
             auto p = std::make_shared<PyStepStream>();
             p->rows = rows;
             p->s.rows = rows.mutable_data();
             if (!mask.is_none()) {
               if (!py::isinstance<py::array>(mask))
                 throw py::type_error("_StepStream: mask must be None or an array, got " +
                                      std::string(py::str(py::type::of(mask).attr("__name__"))));
               auto mk = py::reinterpret_borrow<py::array>(mask);
               if (!mk.dtype().is(rows.dtype()) || mk.ndim() != 3 ||
                   !(mk.flags() & py::array::c_style) || mk.shape(0) != rows.shape(0) ||
                   mk.shape(1) != rows.shape(1) || mk.shape(2) != rows.shape(2))
                 throw py::value_error(
                     "_StepStream: mask must be None or a C-contiguous array of rows' dtype " +
                     std::string(py::str(rows.dtype())) + " and shape " +
                     shape_str(shape_of(rows)) + ", got " + std::string(py::str(mk.dtype())) +
                     " of shape " + shape_str(shape_of(mk)));
               p->mask = mk;
               p->s.mask = mk.data();
             }
             return p;
           }),
           py::arg("rows"), py::arg("mask") = py::none())
      .def_property_readonly("rows", [](const PyStepStream &p) { return p.rows; })
      .def_property_readonly("done", [](const PyStepStream &p) { return p.s.done.load(); })
      .def_property_readonly("failed", [](const PyStepStream &p) { return p.s.failed.load(); })
      .def(
          "fail", [](PyStepStream &p) { p.s.fail(); },
          "Mark the stream failed: its reader stops waiting and raises.");
}

}  // namespace rnncore::bindings
