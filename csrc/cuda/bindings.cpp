// torch bindings of the CUDA kernels (fastdnc._cuda): argument checks, allocation, stream.
// Built by setup.py only where nvcc and a CUDA build of torch exist.
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "kernels.cuh"

namespace {

void check(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kFloat64, name,
              " must be float32 or float64");
}

void ok(cudaError_t err) { TORCH_CHECK(err == cudaSuccess, "fastdnc CUDA kernel failed: ", cudaGetErrorString(err)); }

torch::Tensor two_sided_product(torch::Tensor o, torch::Tensor v, torch::Tensor in) {
  check(o, "output_factor");
  check(v, "v");
  check(in, "input_factor");
  TORCH_CHECK(v.dim() == 3, "v must be (batch, p, q)");
  auto out = torch::empty_like(v);
  auto tmp = torch::empty_like(v);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(v.scalar_type(), "two_sided_product", [&] {
    ok(fastdnc_cuda::two_sided_product<scalar_t>(o.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                                                 in.data_ptr<scalar_t>(), tmp.data_ptr<scalar_t>(),
                                                 out.data_ptr<scalar_t>(), v.size(0), v.size(1), v.size(2), stream));
  });
  return out;
}

torch::Tensor gn_sample_core(torch::Tensor roots, torch::Tensor u) {
  check(roots, "roots");
  check(u, "u");
  auto out = torch::empty_like(u);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "gn_sample_core", [&] {
    ok(fastdnc_cuda::gn_sample_core<scalar_t>(roots.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
                                              out.data_ptr<scalar_t>(), u.size(0), roots.size(0), roots.size(1),
                                              roots.size(2), stream));
  });
  return out;
}

torch::Tensor gn_assemble(torch::Tensor x, torch::Tensor roots, double scale) {
  check(x, "inputs");
  check(roots, "roots");
  const int64_t q = x.size(0), n = x.size(1), kk = roots.size(1), p = roots.size(2);
  auto out = torch::empty({p * q, p * q}, x.options());
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "gn_assemble", [&] {
    ok(fastdnc_cuda::gn_assemble<scalar_t>(x.data_ptr<scalar_t>(), roots.data_ptr<scalar_t>(),
                                           out.data_ptr<scalar_t>(), q, n, kk, p, static_cast<scalar_t>(scale),
                                           stream));
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("two_sided_product", &two_sided_product);
  m.def("gn_sample_core", &gn_sample_core);
  m.def("gn_assemble", &gn_assemble);
}
