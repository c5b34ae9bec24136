// oneDNN's matmul for the CPU backend's large products: the LLM.int8() product (s8 x s8 -> s32,
// int8_onednn.cc) and the 4-bit products with bf16 activations once the weight is decoded to
// bf16 (AMX / AVX-512 BF16; gemm4_onednn.cc).
//
// oneDNN is not linked: libdnnl.so.2 is dlopen-ed on the first call of any function here (once,
// thread-safe) and its C API (2.x) is called through pointers, so the plugin loads on machines
// without it. BNB_ONEDNN_LIBRARY replaces the name given to dlopen; it exists for the tests
// (BNB_ONEDNN_LIBRARY=/nonexistent sends every product through the Highway kernels) and is not a
// supported setting. Only the headers are needed to build (BNB_HAVE_DNNL).
#ifndef BNB_BACKEND_CPU_ONEDNN_H_
#define BNB_BACKEND_CPU_ONEDNN_H_

#include <cstdint>

namespace bnb {
namespace cpu {

// Whether oneDNN loaded (a 2.x library with a CPU engine).
bool onednn_available();
// Its version ("2.6.3") or "unavailable (<reason>)"; valid for the life of the process.
const char* onednn_description();

enum class OnednnType : int32_t { kNone, kS8, kS32, kBF16, kF32 };

// C[M, N] = A[M, K] @ B (+ bias[N]), every operand row-major with its own row stride: A's is lda,
// C's ldc; B is [K, N] with row stride ldb, or, with b_rows_are_n, [N, K] with row stride ldb
// (the weight layout: B read as its transpose in place). Products and sums as oneDNN computes
// them for the types (s32 exact for s8; binary32 accumulation for bf16), one rounding to C's type.
struct OnednnMatmul {
  int64_t M, N, K;
  OnednnType a, b, c, bias;  // bias kNone: no bias
  int64_t lda, ldb, ldc;
  bool b_rows_are_n;
};

// Runs the product on `threads` threads. false when oneDNN is unavailable, when it declines the
// shape (it offers only its reference implementation, far slower than the Highway kernels) and
// when a call into it fails; C is then to be computed another way.
// Primitives are created once per distinct OnednnMatmul and kept (creating one costs about as
// much as a small product); they may run from many threads at once.
bool onednn_matmul(int32_t threads, const OnednnMatmul& shape, const void* A, const void* B, const void* bias,
                   void* C);

}  // namespace cpu
}  // namespace bnb

#endif  // BNB_BACKEND_CPU_ONEDNN_H_
