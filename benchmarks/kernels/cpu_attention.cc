// Scaled dot-product attention on CPU as an XLA FFI custom call (issue 20, route 2; benchmarks/cpu_kernels.py).
//
// q, k, v are read in place in flaxtrain's [b, t, h, d] layout (one head's rows are h * d floats apart, which
// BLAS takes as the leading dimension), so no [b, h, t, d] copies are made. Per (batch, head) pair: scores =
// scale * q k^T and out = p v as sgemm calls, the mask and the float32 softmax between them on the scores in
// cache; the pairs are spread over XLA's intra-op thread pool (the FFI context's ThreadPool). The backward
// pass takes the saved probabilities: dv = p^T dout, dp = dout v^T, ds = p * (dp - rowsum(dp * p)) (zero at
// masked keys, as jnp.where's gradient is), dq = scale * ds k, dk = scale * ds^T q.
//
// sgemm is the Fortran-ABI routine of the BLAS scipy ships (its address comes from scipy.linalg.cython_blas,
// as jaxlib's own LAPACK kernels get theirs), handed over once by flaxtrain_attention_set_sgemm.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "xla/ffi/api/ffi.h"
namespace ffi = xla::ffi;

using sgemm_t = void(const char*, const char*, const int*, const int*, const int*, const float*, const float*,
                     const int*, const float*, const int*, const float*, float*, const int*);
static sgemm_t* sgemm = nullptr;
static constexpr float kLowest = -3.4028234663852886e38f;
extern "C" void flaxtrain_attention_set_sgemm(void* fn) { sgemm = reinterpret_cast<sgemm_t*>(fn); }

// Row-major C[r, c] (leading dimension ldc) = alpha * op(A) op(B), expressed through column-major sgemm.
static void gemm_rm(bool ta, bool tb, int r, int c, int inner, float alpha, const float* a, int lda, const float* b,
                    int ldb, float* out, int ldc) {
  const float zero = 0.0f;
  const char* tb_ = tb ? "T" : "N";
  const char* ta_ = ta ? "T" : "N";
  // OpenBLAS runs a GEMM of m * n * k <= 262144 on the calling thread: keep each call under it, in row blocks of C.
  int rows = std::max(1, std::min(r, int(262144 / (int64_t(c) * inner))));
  for (int r0 = 0; r0 < r; r0 += rows) {
    int rb = std::min(rows, r - r0);
    const float* ab = ta ? a + r0 : a + int64_t(r0) * lda;
    // row-major C = op(A) op(B)  <=>  column-major C' = op(B)' op(A)'
    sgemm(tb_, ta_, &c, &rb, &inner, &alpha, b, &ldb, ab, &lda, &zero, out + int64_t(r0) * ldc, &ldc);
  }
}

// Runs fn(i) for i in [0, n) on the calling thread and XLA's intra-op pool; returns when all are done.
template <typename F>
static void parallel_for(ffi::ThreadPool& pool, int64_t n, F fn) {
  struct Shared {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
    std::mutex mu;
    std::condition_variable cv;
  };
  auto shared = std::make_shared<Shared>();
  auto work = [shared, n, &fn]() {
    for (int64_t i; (i = shared->next.fetch_add(1)) < n;) {
      fn(i);
      if (shared->done.fetch_add(1) + 1 == n) {
        std::lock_guard<std::mutex> lock(shared->mu);
        shared->cv.notify_all();
      }
    }
  };
  int64_t helpers = std::min<int64_t>(pool.num_threads(), n - 1);
  for (int64_t t = 0; t < helpers; ++t) {
    // A helper that starts late finds no work left and touches nothing but `shared`.
    pool.Schedule([shared, n, work]() { if (shared->next.load() < n) work(); });
  }
  work();
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->cv.wait(lock, [&] { return shared->done.load() == n; });
}

// mask: [b, tb, s] (tb = 1 or t), shared by the heads: false keys score the lowest float, as jnp.where does.
static ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                          ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::PRED> mask, float scale,
                          ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> probs) {
  if (sgemm == nullptr) return ffi::Error::Internal("flaxtrain attention: sgemm not set");
  auto qd = q.dimensions(), kd = k.dimensions(), bd = mask.dimensions();
  const int B = qd[0], T = qd[1], H = qd[2], D = qd[3], S = kd[1], TB = bd[1];
  const int ld = H * D;
  const float* Q = q.typed_data(); const float* K = k.typed_data(); const float* V = v.typed_data();
  const bool* M = mask.typed_data();
  float* O = out->typed_data(); float* P = probs->typed_data();
  parallel_for(pool, int64_t(B) * H, [&](int64_t i) {
    const int b = i / H, h = i % H;
    const int64_t off = int64_t(b) * T * ld + h * D, koff = int64_t(b) * S * ld + h * D;
    float* p = P + i * int64_t(T) * S;
    gemm_rm(false, true, T, S, D, scale, Q + off, ld, K + koff, ld, p, S);  // scores = scale q k^T
    for (int t = 0; t < T; ++t) {
      float* row = p + int64_t(t) * S;
      const bool* mr = M + (int64_t(b) * TB + (TB == 1 ? 0 : t)) * S;
      float mx = -INFINITY;
      for (int s = 0; s < S; ++s) { if (!mr[s]) row[s] = kLowest; mx = std::max(mx, row[s]); }
      float sum = 0.0f;
      for (int s = 0; s < S; ++s) { row[s] = std::exp(row[s] - mx); sum += row[s]; }
      const float inv = 1.0f / sum;
      for (int s = 0; s < S; ++s) row[s] *= inv;
    }
    gemm_rm(false, false, T, D, S, 1.0f, p, S, V + koff, ld, O + off, ld);  // out = p v
  });
  return ffi::Error::Success();
}

static ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                           ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::PRED> mask, ffi::Buffer<ffi::F32> probs, ffi::Buffer<ffi::F32> dout,
                           float scale, ffi::ResultBuffer<ffi::F32> dq, ffi::ResultBuffer<ffi::F32> dk,
                           ffi::ResultBuffer<ffi::F32> dv) {
  if (sgemm == nullptr) return ffi::Error::Internal("flaxtrain attention: sgemm not set");
  auto qd = q.dimensions(), kd = k.dimensions(), md = mask.dimensions();
  const int B = qd[0], T = qd[1], H = qd[2], D = qd[3], S = kd[1], TB = md[1];
  const int ld = H * D;
  const float* Q = q.typed_data(); const float* K = k.typed_data(); const float* V = v.typed_data();
  const bool* M = mask.typed_data();
  const float* P = probs.typed_data(); const float* dO = dout.typed_data();
  float* dQ = dq->typed_data(); float* dK = dk->typed_data(); float* dV = dv->typed_data();
  parallel_for(pool, int64_t(B) * H, [&](int64_t i) {
    const int b = i / H, h = i % H;
    const int64_t off = int64_t(b) * T * ld + h * D, koff = int64_t(b) * S * ld + h * D;
    const float* p = P + i * int64_t(T) * S;
    std::vector<float> ds(size_t(T) * S);
    gemm_rm(true, false, S, D, T, 1.0f, p, S, dO + off, ld, dV + koff, ld);       // dv = p^T dout
    gemm_rm(false, true, T, S, D, 1.0f, dO + off, ld, V + koff, ld, ds.data(), S);  // dp = dout v^T
    for (int t = 0; t < T; ++t) {
      float* row = ds.data() + int64_t(t) * S;
      const float* pr = p + int64_t(t) * S;
      float dot = 0.0f;
      for (int s = 0; s < S; ++s) dot += row[s] * pr[s];
      const bool* mr = M + (int64_t(b) * TB + (TB == 1 ? 0 : t)) * S;
      for (int s = 0; s < S; ++s) row[s] = mr[s] ? scale * pr[s] * (row[s] - dot) : 0.0f;  // d(scores) * scale
    }
    gemm_rm(false, false, T, D, S, 1.0f, ds.data(), S, K + koff, ld, dQ + off, ld);  // dq = ds k
    gemm_rm(true, false, S, D, T, 1.0f, ds.data(), S, Q + off, ld, dK + koff, ld);   // dk = ds^T q
  });
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(FlaxtrainAttentionFwd, Forward,
    ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>()
        .Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::PRED>>().Attr<float>("scale")
        .Ret<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(FlaxtrainAttentionBwd, Backward,
    ffi::Ffi::Bind().Ctx<ffi::ThreadPool>().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>()
        .Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::PRED>>().Arg<ffi::Buffer<ffi::F32>>().Arg<ffi::Buffer<ffi::F32>>()
        .Attr<float>("scale")
        .Ret<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>());
