// The bindings: one bind_<area>(m) per file of this folder, called by module.cpp.
//
// Every binding has the same four steps: validate its arguments (validate.h), allocate by
// asking the cell how much it needs (cells/*.h), call the kernel without the GIL (arrays.h),
// and return. Nothing about a cell's layout or arithmetic lives here.
#pragma once

#include <pybind11/pybind11.h>

namespace rnncore::bindings {

void bind_runtime(pybind11::module_ &m);  // runtime.cpp
void bind_rnn(pybind11::module_ &m);      // rnn.cpp
void bind_lstm(pybind11::module_ &m);     // lstm.cpp
void bind_gru(pybind11::module_ &m);      // gru.cpp
void bind_lm(pybind11::module_ &m);       // lm.cpp
void bind_probe(pybind11::module_ &m);    // probe.cpp
void bind_stream(pybind11::module_ &m);   // stream.cpp

}  // namespace rnncore::bindings
