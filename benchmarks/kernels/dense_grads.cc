// A dense layer's three GEMMs as XLA FFI custom calls through BLAS sgemm (issue 20, route 3;
// benchmarks/cpu_kernels.py): y = x w, dx = dy w^T and dw = x^T dy on row-major float32 [n, k] x [k, m],
// the transposes given to sgemm as flags instead of being copied. sgemm is the Fortran-ABI routine of the
// BLAS scipy ships, handed over once by flaxtrain_dense_set_sgemm; BLAS uses its own threads.
#include <cstdint>

#include "xla/ffi/api/ffi.h"
namespace ffi = xla::ffi;

using sgemm_t = void(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                     const int*, const float*, const int*, const float*, float*, const int*);
static sgemm_t* sgemm = nullptr;
extern "C" void flaxtrain_dense_set_sgemm(void* fn) { sgemm = reinterpret_cast<sgemm_t*>(fn); }

// Row-major C[r, c] = op(A) op(B), i.e. column-major C' = op(B)' op(A)'.
static ffi::Error gemm_rm(bool ta, bool tb, int r, int c, int inner, const float* a, int lda, const float* b, int ldb,
                          float* out) {
  if (sgemm == nullptr) return ffi::Error::Internal("flaxtrain dense: sgemm not set");
  const float one = 1.0f, zero = 0.0f;
  sgemm(tb ? "T" : "N", ta ? "T" : "N", &c, &r, &inner, &one, b, &ldb, a, &lda, &zero, out, &c);
  return ffi::Error::Success();
}

// y[n, m] = x[n, k] w[k, m]
static ffi::Error Forward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y) {
  const int n = x.dimensions()[0], k = x.dimensions()[1], m = w.dimensions()[1];
  return gemm_rm(false, false, n, m, k, x.typed_data(), k, w.typed_data(), m, y->typed_data());
}
// dx[n, k] = dy[n, m] w[k, m]^T
static ffi::Error InputGrad(ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> dx) {
  const int n = dy.dimensions()[0], m = dy.dimensions()[1], k = w.dimensions()[0];
  return gemm_rm(false, true, n, k, m, dy.typed_data(), m, w.typed_data(), m, dx->typed_data());
}
// dw[k, m] = x[n, k]^T dy[n, m]
static ffi::Error WeightGrad(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy, ffi::ResultBuffer<ffi::F32> dw) {
  const int n = x.dimensions()[0], k = x.dimensions()[1], m = dy.dimensions()[1];
  return gemm_rm(true, false, k, m, n, x.typed_data(), k, dy.typed_data(), m, dw->typed_data());
}

#define FLAXTRAIN_GEMM_HANDLER(name, fn)                                                                  \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(name, fn,                                                                 \
      ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>());
FLAXTRAIN_GEMM_HANDLER(FlaxtrainDenseForward, Forward)
FLAXTRAIN_GEMM_HANDLER(FlaxtrainDenseInputGrad, InputGrad)
FLAXTRAIN_GEMM_HANDLER(FlaxtrainDenseWeightGrad, WeightGrad)
