// pybind11 bindings of the CPU kernels. Tensors arrive as NumPy views (zero-copy); the Python
// launcher (fastdnc/kernels/cpp.py) guarantees contiguity and one dtype, and these checks are the
// last line of defence with messages that name the offending argument.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "kronecker.hpp"

namespace py = pybind11;

namespace {

template <typename T>
using carray = py::array_t<T, py::array::c_style>;

void require(bool ok, const std::string& msg) {
  if (!ok) throw std::invalid_argument("fastdnc._C: " + msg);
}

template <typename T>
void two_sided_product(carray<T> output_factor, carray<T> v, carray<T> input_factor,
                       carray<T> out) {
  require(v.ndim() == 3, "v must have shape (batch, p, q), got ndim=" + std::to_string(v.ndim()));
  const int64_t batch = v.shape(0), p = v.shape(1), q = v.shape(2);
  require(output_factor.ndim() == 2 && output_factor.shape(0) == p && output_factor.shape(1) == p,
          "output_factor must have shape (p, p) with p=" + std::to_string(p));
  require(input_factor.ndim() == 2 && input_factor.shape(0) == q && input_factor.shape(1) == q,
          "input_factor must have shape (q, q) with q=" + std::to_string(q));
  require(out.ndim() == 3 && out.shape(0) == batch && out.shape(1) == p && out.shape(2) == q,
          "out must have the shape of v");
  require(out.writeable(), "out must be writeable");
  const T* o = output_factor.data();
  const T* vv = v.data();
  const T* in = input_factor.data();
  T* y = out.mutable_data();
  py::gil_scoped_release release;
  fastdnc::two_sided_product<T>(o, vv, in, y, batch, p, q);
}

int max_threads() {
#ifdef FASTDNC_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastdnc compiled CPU kernels (C++17, OpenMP)";
  const char* doc =
      "Batched two-sided product out[j] = output_factor @ v[j] @ input_factor (row-major, "
      "contiguous, one dtype; float32 or float64).";
  m.def("two_sided_product_f32", &two_sided_product<float>, doc, py::arg("output_factor"),
        py::arg("v"), py::arg("input_factor"), py::arg("out"));
  m.def("two_sided_product_f64", &two_sided_product<double>, doc, py::arg("output_factor"),
        py::arg("v"), py::arg("input_factor"), py::arg("out"));
  m.def("max_threads", &max_threads, "OpenMP threads the kernels use (1 without OpenMP).");
#ifdef FASTDNC_OPENMP
  m.attr("has_openmp") = true;
#else
  m.attr("has_openmp") = false;
#endif
}
