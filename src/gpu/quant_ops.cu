// Launchers of the quantization family and their entries in the ops table. The core has
// validated every argument (backend_abi.h), so these only pick a kernel instantiation, size the
// grid and check the launch. Nothing here synchronises: every op is capturable in a CUDA graph.
#include <cstdint>

#include "gpu_backend.h"
#include "quant_kernels.cuh"
#include "tables.h"

namespace bnb {
namespace gpu {
namespace {

Table16 table16(const uint32_t* bits, int count, int first) {
  Table16 t{};
  for (int i = 0; i < count; ++i) t.v[first + i] = bits_to_float(bits[i]);
  return t;
}

// Resident blocks per multiprocessor of a kernel without dynamic shared memory (at least 1), asked
// once per instantiation.
template <typename Kernel>
int occupancy(Kernel kernel, int threads) {
  const int blocks = resident_blocks(kernel, threads, 0);
  return blocks > 0 ? blocks : 1;
}

// A persistent grid whose blocks all walk the same number of tiles (32768 tiles on 1056 blocks
// would leave 32 rounds for some and 31 for others: a 3 % tail).
int64_t balanced_grid(const GpuContext& ctx, int per_sm, int64_t tiles) {
  const int64_t grid = persistent_grid(ctx, per_sm, tiles);
  const int64_t rounds = (tiles + grid - 1) / grid;
  return (tiles + rounds - 1) / rounds;
}

// ---------------------------------------------------------------- 8-bit blockwise

template <int D, int B>
bnb_status_t launch_quantize_blockwise(const GpuContext& ctx, const void* a, int64_t n, const float* code,
                                       uint8_t* out, float* absmax, const float* offset, gpuStream_t stream) {
  using T = typename Elem<D>::T;
  constexpr int kThreads = threads_for(B / quant_chunk_elems<D>());
  constexpr int64_t kTile = int64_t{kThreads} * kQuantChunkBytes / static_cast<int64_t>(sizeof(T));
  static const int per_sm = occupancy(quantize_blockwise_kernel<D, B>, kThreads);
  const int64_t grid = balanced_grid(ctx, per_sm, (n + kTile - 1) / kTile);
  const int vec = aligned16(a) && aligned16(out);
  quantize_blockwise_kernel<D, B><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(
      static_cast<const T*>(a), code, out, absmax, n, vec, offset);
  return check_launch("quantize_blockwise");
}

template <int D>
bnb_status_t dispatch_quantize_blockwise(const GpuContext& ctx, const void* a, int64_t n, int64_t blocksize,
                                         const float* code, uint8_t* out, float* absmax, const float* offset,
                                         gpuStream_t stream) {
  switch (blocksize) {
    case 64: return launch_quantize_blockwise<D, 64>(ctx, a, n, code, out, absmax, offset, stream);
    case 128: return launch_quantize_blockwise<D, 128>(ctx, a, n, code, out, absmax, offset, stream);
    case 256: return launch_quantize_blockwise<D, 256>(ctx, a, n, code, out, absmax, offset, stream);
    case 512: return launch_quantize_blockwise<D, 512>(ctx, a, n, code, out, absmax, offset, stream);
    case 1024: return launch_quantize_blockwise<D, 1024>(ctx, a, n, code, out, absmax, offset, stream);
    case 2048: return launch_quantize_blockwise<D, 2048>(ctx, a, n, code, out, absmax, offset, stream);
    case 4096: return launch_quantize_blockwise<D, 4096>(ctx, a, n, code, out, absmax, offset, stream);
    default: return fail(BNB_ERR_INTERNAL, "quantize_blockwise has no kernel for blocksize %lld",
                         static_cast<long long>(blocksize));
  }
}

bnb_status_t quantize_blockwise(void* impl, int32_t dtype, const void* A, int64_t n, int64_t blocksize,
                                const float* code, uint8_t* out, float* absmax, void* stream) {
  const GpuContext& ctx = ctx_of(impl);
  DeviceGuard guard(ctx.device);
  const auto s = static_cast<gpuStream_t>(stream);
  return with_dtype(dtype, "quantize_blockwise", [&](auto d) {
    return dispatch_quantize_blockwise<decltype(d)::value>(ctx, A, n, blocksize, code, out, absmax, nullptr, s);
  });
}

template <int D>
bnb_status_t launch_dequantize_blockwise(const GpuContext& ctx, const uint8_t* q, const float* absmax,
                                         const float* code, int64_t n, int64_t blocksize, void* out,
                                         gpuStream_t stream) {
  constexpr int64_t kTile = int64_t{256} * chunk_elems<D>() * kDequantSlices;
  static const int per_sm = occupancy(dequantize_blockwise_kernel<D>, 256);
  const int64_t grid = balanced_grid(ctx, per_sm, (n + kTile - 1) / kTile);
  const int vec = aligned16(q) && aligned16(out);
  dequantize_blockwise_kernel<D><<<static_cast<unsigned>(grid), 256, 0, stream>>>(
      q, absmax, code, n, log2_of(blocksize), static_cast<typename Elem<D>::T*>(out), vec);
  return check_launch("dequantize_blockwise");
}


bnb_status_t dequantize_blockwise(void* impl, const uint8_t* q, const float* absmax, const float* code, int64_t n,
                                  int64_t blocksize, int32_t out_dtype, void* out, void* stream) {
  const GpuContext& ctx = ctx_of(impl);
  DeviceGuard guard(ctx.device);
  const auto s = static_cast<gpuStream_t>(stream);
  return with_dtype(out_dtype, "dequantize_blockwise", [&](auto d) {
    return launch_dequantize_blockwise<decltype(d)::value>(ctx, q, absmax, code, n, blocksize, out, s);
  });
}

// ---------------------------------------------------------------- 4-bit

template <int D, int B, int QT>
bnb_status_t launch_quantize_4bit(const GpuContext& ctx, const void* a, int64_t n, uint8_t* packed, float* absmax,
                                  gpuStream_t stream) {
  using T = typename Elem<D>::T;
  constexpr int kThreads = threads_for(B / quant_chunk_elems<D>());
  constexpr int64_t kTile = int64_t{kThreads} * kQuantChunkBytes / static_cast<int64_t>(sizeof(T));
  static const int per_sm = occupancy(quantize_4bit_kernel<D, B, QT>, kThreads);
  // Thresholds at 1..15 (NF4) or 1..7 (FP4), so the search needs no bounds.
  static const Table16 thresholds =
      QT == kNF4 ? table16(kNF4ThresholdBits, 15, 1) : table16(kFP4ThresholdBits, 7, 1);
  const int64_t grid = balanced_grid(ctx, per_sm, (n + kTile - 1) / kTile);
  const int vec = aligned16(a) && aligned16(packed);
  quantize_4bit_kernel<D, B, QT><<<static_cast<unsigned>(grid), kThreads, 0, stream>>>(
      static_cast<const T*>(a), thresholds, packed, absmax, n, vec);
  return check_launch("quantize_4bit");
}


template <int D, int QT>
bnb_status_t dispatch_quantize_4bit(const GpuContext& ctx, const void* a, int64_t n, int64_t blocksize,
                                    uint8_t* packed, float* absmax, gpuStream_t stream) {
  switch (blocksize) {
    case 32: return launch_quantize_4bit<D, 32, QT>(ctx, a, n, packed, absmax, stream);
    case 64: return launch_quantize_4bit<D, 64, QT>(ctx, a, n, packed, absmax, stream);
    case 128: return launch_quantize_4bit<D, 128, QT>(ctx, a, n, packed, absmax, stream);
    case 256: return launch_quantize_4bit<D, 256, QT>(ctx, a, n, packed, absmax, stream);
    case 512: return launch_quantize_4bit<D, 512, QT>(ctx, a, n, packed, absmax, stream);
    case 1024: return launch_quantize_4bit<D, 1024, QT>(ctx, a, n, packed, absmax, stream);
    case 2048: return launch_quantize_4bit<D, 2048, QT>(ctx, a, n, packed, absmax, stream);
    case 4096: return launch_quantize_4bit<D, 4096, QT>(ctx, a, n, packed, absmax, stream);
    default: return fail(BNB_ERR_INTERNAL, "quantize_4bit has no kernel for blocksize %lld",
                         static_cast<long long>(blocksize));
  }
}

template <int QT>
bnb_status_t dispatch_quantize_4bit_dtype(const GpuContext& ctx, int32_t dtype, const void* a, int64_t n,
                                          int64_t blocksize, uint8_t* packed, float* absmax, gpuStream_t stream) {
  return with_dtype(dtype, "quantize_4bit", [&](auto d) {
    return dispatch_quantize_4bit<decltype(d)::value, QT>(ctx, a, n, blocksize, packed, absmax, stream);
  });
}

bnb_status_t quantize_4bit(void* impl, int32_t quant_type, int32_t dtype, const void* A, int64_t n,
                           int64_t blocksize, uint8_t* packed, float* absmax, void* stream) {
  const GpuContext& ctx = ctx_of(impl);
  DeviceGuard guard(ctx.device);
  const auto s = static_cast<gpuStream_t>(stream);
  switch (quant_type) {
    case kNF4: return dispatch_quantize_4bit_dtype<kNF4>(ctx, dtype, A, n, blocksize, packed, absmax, s);
    case kFP4: return dispatch_quantize_4bit_dtype<kFP4>(ctx, dtype, A, n, blocksize, packed, absmax, s);
    default: return fail(BNB_ERR_NOT_SUPPORTED, "quant_type %d is not supported: use BNB_NF4 or BNB_FP4", quant_type);
  }
}

template <int D, bool kNested>
bnb_status_t launch_dequantize_4bit(const GpuContext& ctx, const Table16& lut, const uint8_t* packed,
                                    const Scales4& scales, int64_t n, int64_t blocksize, void* out,
                                    gpuStream_t stream) {
  constexpr int64_t kTile = int64_t{256} * chunk_elems<D>() * kDequantSlices;
  static const int per_sm = occupancy(dequantize_4bit_kernel<D, kNested>, 256);
  const int64_t grid = balanced_grid(ctx, per_sm, (n + kTile - 1) / kTile);
  const int vec = aligned16(packed) && aligned16(out);
  dequantize_4bit_kernel<D, kNested><<<static_cast<unsigned>(grid), 256, 0, stream>>>(
      packed, lut, scales, n, log2_of(blocksize), static_cast<typename Elem<D>::T*>(out), vec);
  return check_launch("dequantize_4bit");
}


template <bool kNested>
bnb_status_t dispatch_dequantize_4bit(const GpuContext& ctx, const Table16& lut, const uint8_t* packed,
                                      const Scales4& scales, int64_t n, int64_t blocksize, int32_t out_dtype,
                                      void* out, gpuStream_t stream) {
  return with_dtype(out_dtype, "dequantize_4bit", [&](auto d) {
    return launch_dequantize_4bit<decltype(d)::value, kNested>(ctx, lut, packed, scales, n, blocksize, out, stream);
  });
}

bnb_status_t dequantize_4bit(void* impl, int32_t quant_type, const uint8_t* packed,
                             const bnb_scales_resolved_t* scales, int64_t n, int64_t blocksize, int32_t out_dtype,
                             void* out, void* stream) {
  const GpuContext& ctx = ctx_of(impl);
  DeviceGuard guard(ctx.device);
  return dequantize_4bit_on(ctx, quant_type, packed, scales, n, blocksize, out_dtype, out,
                            static_cast<gpuStream_t>(stream));
}

// ---------------------------------------------------------------- double quantization

// offset = mean(absmax) (binary64 sum, on the device), then absmax - offset is quantized 8-bit
// with DYN8S and blocksize 256. The mean's partial sums borrow absmax2 until the quantizer
// overwrites it, so the op needs no scratch memory and no host synchronisation.
bnb_status_t compress_absmax(void* impl, const float* absmax, int64_t nblocks, uint8_t* absmax_q, float* absmax2,
                             float* offset, void* stream) {
  const GpuContext& ctx = ctx_of(impl);
  DeviceGuard guard(ctx.device);
  const auto s = static_cast<gpuStream_t>(stream);
  constexpr int64_t kBlock2 = 256;
  const int64_t n2 = (nblocks + kBlock2 - 1) / kBlock2;
  int64_t nparts = (nblocks + 8191) / 8192;  // about 32 KiB of absmax per partial sum
  nparts = nparts < n2 / 2 ? nparts : n2 / 2;
  nparts = nparts < 4096 ? nparts : 4096;
  if (nparts < 1) nparts = 1;
  const int64_t chunk = (nblocks + nparts - 1) / nparts;
  nparts = (nblocks + chunk - 1) / chunk;
  auto* partials = reinterpret_cast<uint32_t*>(absmax2);
  mean_partial_kernel<<<static_cast<unsigned>(nparts), kMeanThreads, 0, s>>>(absmax, nblocks, chunk, partials,
                                                                              offset);
  bnb_status_t st = check_launch("mean_partial");
  if (st != BNB_SUCCESS) return st;
  if (nparts > 1) {
    mean_finish_kernel<<<1, kMeanThreads, 0, s>>>(partials, static_cast<int>(nparts), nblocks, offset);
    st = check_launch("mean_finish");
    if (st != BNB_SUCCESS) return st;
  }
  return launch_quantize_blockwise<kF32, 256>(ctx, absmax, nblocks, ctx.tables[BNB_CODE_DYNAMIC_SIGNED], absmax_q,
                                              absmax2, offset, s);
}

}  // namespace

bnb_status_t dequantize_4bit_on(const GpuContext& ctx, int32_t quant_type, const uint8_t* packed,
                                const bnb_scales_resolved_t* scales, int64_t n, int64_t blocksize, int32_t out_dtype,
                                void* out, gpuStream_t stream) {
  // The decoder's FP4 table applies bit 3 as a sign, so nibble 8 gives -0.0 (docs/FORMATS.md §3.6).
  static const Table16 nf4 = table16(kNF4Bits, 16, 0);
  static const Table16 fp4 = table16(kFP4DecodeBits, 16, 0);
  const Table16* lut = nullptr;
  switch (quant_type) {
    case kNF4: lut = &nf4; break;
    case kFP4: lut = &fp4; break;
    default: return fail(BNB_ERR_NOT_SUPPORTED, "quant_type %d is not supported: use BNB_NF4 or BNB_FP4", quant_type);
  }
  const Scales4 sc = scales4_of(*scales);
  if (scales->absmax != nullptr) {
    return dispatch_dequantize_4bit<false>(ctx, *lut, packed, sc, n, blocksize, out_dtype, out, stream);
  }
  return dispatch_dequantize_4bit<true>(ctx, *lut, packed, sc, n, blocksize, out_dtype, out, stream);
}

void register_quant_ops(bnb_backend_ops_t* ops) {
  ops->quantize_blockwise = quantize_blockwise;
  ops->dequantize_blockwise = dequantize_blockwise;
  ops->quantize_4bit = quantize_4bit;
  ops->dequantize_4bit = dequantize_4bit;
  ops->compress_absmax = compress_absmax;
}

}  // namespace gpu
}  // namespace bnb
