// pybind11 bindings of the CPU kernels. Tensors arrive as NumPy views (zero-copy); the Python
// launcher (fastdnc/kernels/cpp.py) guarantees contiguity and one dtype, and these checks are the
// last line of defence with messages that name the offending argument. Every array argument is
// .noconvert(): an array of another dtype or a non-contiguous one is refused (TypeError), never
// silently copied and converted.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "gauss_newton.hpp"
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

template <typename T>
void gn_sample_core(carray<T> roots, carray<T> u, carray<T> out) {
  require(roots.ndim() == 3, "roots must have shape (N, K, p)");
  const int64_t n = roots.shape(0), kk = roots.shape(1), p = roots.shape(2);
  require(u.ndim() == 3 && u.shape(1) == n && u.shape(2) == p,
          "u must have shape (k, N, p) with N=" + std::to_string(n) + ", p=" + std::to_string(p));
  const int64_t k = u.shape(0);
  require(out.ndim() == 3 && out.shape(0) == k && out.shape(1) == n && out.shape(2) == p,
          "out must have the shape of u");
  const T* r = roots.data();
  const T* uu = u.data();
  T* o = out.mutable_data();
  py::gil_scoped_release release;
  fastdnc::gn_sample_core<T>(r, uu, o, k, n, kk, p);
}

template <typename T>
void gn_assemble(carray<T> x, carray<T> xt, carray<T> roots, carray<T> out, double scale, int64_t chunk) {
  require(x.ndim() == 2 && xt.ndim() == 2, "inputs must be (q, N) with its transpose (N, q)");
  const int64_t q = x.shape(0), n = x.shape(1);
  require(xt.shape(0) == n && xt.shape(1) == q, "the transposed inputs must be (N, q)");
  require(roots.ndim() == 3 && roots.shape(0) == n, "roots must have shape (N, K, p) with N=" + std::to_string(n));
  const int64_t kk = roots.shape(1), p = roots.shape(2);
  require(out.ndim() == 2 && out.shape(0) == p * q && out.shape(1) == p * q, "out must be (p*q, p*q)");
  require(chunk >= 1, "chunk must be >= 1");
  const T* xx = x.data();
  const T* xtt = xt.data();
  const T* r = roots.data();
  T* o = out.mutable_data();
  py::gil_scoped_release release;
  fastdnc::gn_assemble<T>(xx, xtt, r, o, q, n, kk, p, static_cast<T>(scale), chunk);
}

template <typename T>
void gn_gram(carray<T> roots, carray<T> gram, carray<T> out, double scale) {
  require(roots.ndim() == 3, "roots must have shape (N, K, p)");
  const int64_t n = roots.shape(0), kk = roots.shape(1), p = roots.shape(2);
  require(gram.ndim() == 2 && gram.shape(0) == n && gram.shape(1) == n,
          "input_gram must have shape (N, N) with N=" + std::to_string(n));
  require(out.ndim() == 2 && out.shape(0) == n * kk && out.shape(1) == n * kk,
          "out must have shape (N*K, N*K) with N*K=" + std::to_string(n * kk));
  require(out.writeable(), "out must be writeable");
  const T* r = roots.data();
  const T* g = gram.data();
  T* o = out.mutable_data();
  py::gil_scoped_release release;
  fastdnc::gn_gram<T>(r, g, o, n, kk, p, static_cast<T>(scale));
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
  const auto arr = [](const char* name) { return py::arg(name).noconvert(); };
  const char* doc =
      "Batched two-sided product out[j] = output_factor @ v[j] @ input_factor (row-major, "
      "contiguous, one dtype; float32 or float64).";
  m.def("two_sided_product_f32", &two_sided_product<float>, doc, arr("output_factor"), arr("v"),
        arr("input_factor"), arr("out"));
  m.def("two_sided_product_f64", &two_sided_product<double>, doc, arr("output_factor"), arr("v"),
        arr("input_factor"), arr("out"));
  const char* gdoc =
      "Per-sample Gauss-Newton core out[j, i] = B_i (B_i^T u[j, i]) with roots (N, K, p) holding B_i^T, "
      "u and out (k, N, p).";
  m.def("gn_sample_core_f32", &gn_sample_core<float>, gdoc, arr("roots"), arr("u"), arr("out"));
  m.def("gn_sample_core_f64", &gn_sample_core<double>, gdoc, arr("roots"), arr("u"), arr("out"));
  const char* adoc = "Streamed explicit Gauss-Newton block, one triangle (see fastdnc.kernels.reference.gn_assemble).";
  m.def("gn_assemble_f32", &gn_assemble<float>, adoc, arr("x"), arr("xt"), arr("roots"), arr("out"),
        py::arg("scale"), py::arg("chunk"));
  m.def("gn_assemble_f64", &gn_assemble<double>, adoc, arr("x"), arr("xt"), arr("roots"), arr("out"),
        py::arg("scale"), py::arg("chunk"));
  const char* sdoc = "Sample-space Gram out += scale * (R R^T) o (G (x) 1), R = roots (N, K, p) as (N*K, p), in place";
  m.def("gn_gram_f32", &gn_gram<float>, sdoc, arr("roots"), arr("input_gram"), arr("out"), py::arg("scale"));
  m.def("gn_gram_f64", &gn_gram<double>, sdoc, arr("roots"), arr("input_gram"), arr("out"), py::arg("scale"));
  m.def("max_threads", &max_threads, "OpenMP threads the kernels use (1 without OpenMP).");
#ifdef FASTDNC_OPENMP
  m.attr("has_openmp") = true;
#else
  m.attr("has_openmp") = false;
#endif
}
