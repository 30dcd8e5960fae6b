// The extension module rnncore._core: what each area binds is in its own file (bindings.h).
#include <pybind11/pybind11.h>

#include "bindings/bindings.h"
#include "common/threading.h"

PYBIND11_MODULE(_core, m) {
  namespace b = rnncore::bindings;
  m.doc() = "rnncore's compiled kernels (private: use the rnncore package).";
  rnncore::init_threading();
  b::bind_runtime(m);
  b::bind_rnn(m);
  b::bind_lstm(m);
  b::bind_gru(m);
  b::bind_lm(m);
  b::bind_probe(m);
  b::bind_stream(m);
#ifdef RNNCORE_VERSION
  m.attr("__version__") = RNNCORE_VERSION;
#endif
}
