// torch bindings of the CUDA kernels (fastdnc._cuda): every argument is checked here, in C++, with
// a message that names it (shape, dtype, device, contiguity), the kernel runs under a device guard
// on the current stream of the tensors' device, and the output is allocated by torch.
// Built by setup.py only where nvcc and a CUDA build of torch exist; compile-checked in CI.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "kernels.cuh"

namespace {

void check_operand(const torch::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK(t.is_cuda(), "fastdnc._cuda: ", name, " must be a CUDA tensor, got one on ", t.device());
  TORCH_CHECK(t.dim() == dim, "fastdnc._cuda: ", name, " must have ", dim, " dimensions, got shape ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), "fastdnc._cuda: ", name, " must be contiguous (call .contiguous())");
  TORCH_CHECK(t.scalar_type() == torch::kFloat32 || t.scalar_type() == torch::kFloat64, "fastdnc._cuda: ", name,
              " must be float32 or float64, got ", t.scalar_type());
}

void check_same(const torch::Tensor& a, const char* an, const torch::Tensor& b, const char* bn) {
  TORCH_CHECK(a.scalar_type() == b.scalar_type(), "fastdnc._cuda: ", an, " is ", a.scalar_type(), " but ", bn,
              " is ", b.scalar_type(), "; pass one dtype");
  TORCH_CHECK(a.device() == b.device(), "fastdnc._cuda: ", an, " is on ", a.device(), " but ", bn, " is on ",
              b.device());
}

void ok(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "fastdnc._cuda: ", what, " failed: ", cudaGetErrorString(err));
}

// out[j, i] = B_i (B_iᵀ u[j, i]); roots (N, K, p), u (k, N, p).
torch::Tensor gn_sample_core(const torch::Tensor& roots, const torch::Tensor& u) {
  check_operand(roots, "roots", 3);
  check_operand(u, "u", 3);
  check_same(roots, "roots", u, "u");
  const int64_t n = roots.size(0), kk = roots.size(1), p = roots.size(2);
  TORCH_CHECK(u.size(1) == n && u.size(2) == p, "fastdnc._cuda: u must have shape (k, ", n, ", ", p,
              ") to match roots of shape ", roots.sizes(), ", got ", u.sizes());
  TORCH_CHECK(n <= 2147483647LL, "fastdnc._cuda: at most 2^31 - 1 samples per call, got ", n);
  const c10::cuda::CUDAGuard guard(u.device());
  auto out = torch::empty_like(u);
  int optin = 0;
  ok(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, u.device().index()),
     "querying the shared memory per block");
  const size_t limit = static_cast<size_t>(optin);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "gn_sample_core", [&] {
    const size_t need = fastdnc_cuda::gn_sample_core_smem<scalar_t>(kk, p);
    TORCH_CHECK(need <= limit, "fastdnc._cuda: gn_sample_core keeps a sample's K x p root in shared memory: K=", kk,
                ", p=", p, " needs ", need / 1024, " KiB, this device allows ", limit / 1024,
                " KiB per block; use backend='torch'");
    ok(fastdnc_cuda::gn_sample_core<scalar_t>(roots.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
                                              out.data_ptr<scalar_t>(), u.size(0), n, kk, p, limit,
                                              c10::cuda::getCurrentCUDAStream()),
       "gn_sample_core");
  });
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastdnc CUDA kernels (fused only; GEMMs go to cuBLAS through torch)";
  m.def("gn_sample_core", &gn_sample_core, "out[j, i] = B_i (B_i^T u[j, i]); roots (N, K, p), u (k, N, p)",
        pybind11::arg("roots"), pybind11::arg("u"));
}
