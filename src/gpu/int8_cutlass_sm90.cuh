// The LLM.int8() product and its dequantization as ONE Hopper kernel: a CUTLASS 3.x sm_90a int8
// GEMM (CollectiveBuilder: TMA loads, wgmma, the warp-specialized kernels) whose epilogue is an
// epilogue visitor tree (EVT) computing, for c = sum_k A[m, k] W[n, k] (int32),
//
//   t = RN32(RN32(float(c) * row_stats[m]) * col_stats[n])            (two binary32 multiplies, ftz)
//   no bias:   out = RN16(RN32(t * K_DQ))
//   fp16 bias: out = RN16(fma(t, K_DQ, float(bias[n])))                (one fused multiply-add, ftz)
//
// with K_DQ = kDequantScaleBits (src/common/tables.h): int8_kernels.cuh's dequant_f16 for an fp16
// out, so no int32 [M, N] matrix goes through memory. fp16 out only. Users: the CUDA plugin
// (int8_cutlass_sm90.cu, with -DBNB_INT8_CUTLASS=ON) and bench/int8/bench_int8_cutlass.cu. Needs
// CUTLASS's headers and sm_90a (CUDA_ARCHITECTURES 90a); not part of the HIP build.
#ifndef BNB_GPU_INT8_CUTLASS_SM90_CUH_
#define BNB_GPU_INT8_CUTLASS_SM90_CUH_

#include <cuda_fp16.h>

#include <cstdint>

// Programmatic dependent launch in CUTLASS's sm90 kernels (griddepcontrol): compiled in here, so
// that every TU that includes the kernels agrees; used only by launches with launch_with_pdl
// (cutlass_pdl() below).
#ifndef CUTLASS_ENABLE_GDC_FOR_SM90
#define CUTLASS_ENABLE_GDC_FOR_SM90 1
#endif

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/dispatch_policy.hpp"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/kernel_hardware_info.h"
#include "cutlass/util/packed_stride.hpp"

#include "gpu_backend.h"  // env_on
#include "gpu_port.h"     // gpu_mul_ftz, gpu_fma_ftz: mul.rn.ftz.f32, fma.rn.ftz.f32
#include "tables.h"       // kDequantScaleBits

namespace bnb {
namespace gpu {
namespace int8_cutlass {

static_assert(kDequantScaleBits == 0x38820610u, "K_DQ changed: check dequant_f16 (int8_kernels.cuh) again");

// ------------------------------------------------------------------ the EVT's compute node

// The node's run-time argument (Sm90Compute passes ComputeFn<float>::Arguments to the functor,
// so the type is shared by every instantiation of DequantFn): whether the bias child holds a
// vector (else its values are ignored and the no-bias rounding is used).
struct DequantArgs {
  int has_bias = 0;
};

// Sm90Compute<DequantFn, half_t, float, round_to_nearest>: its inputs arrive converted to float by
// Sm90Compute (acc: static_cast<float>(int32_t), cvt.rn.f32.s32 = __int2float_rn; row and column
// scales: float as is; bias: fp16 -> float, exact). It returns fp16 itself, so Sm90Compute's
// output conversion is the identity. The roundings are dequant_f16's (O = fp16), one PTX
// instruction each, so neither the compiler nor its flags can contract or re-associate them.
template <class T>
struct DequantFn {
  using Arguments = DequantArgs;

  template <int N>
  __device__ __forceinline__ cutlass::Array<cutlass::half_t, N> operator()(
      cutlass::Array<float, N> const& acc, cutlass::Array<float, N> const& row_scale,
      cutlass::Array<float, N> const& col_scale, cutlass::Array<float, N> const& bias,
      DequantArgs const& args) const {
    const float kdq = __uint_as_float(kDequantScaleBits);
    cutlass::Array<cutlass::half_t, N> out;
    if (args.has_bias) {
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < N; ++i) {
        const float t = gpu_mul_ftz(gpu_mul_ftz(acc[i], row_scale[i]), col_scale[i]);
        out[i] = cutlass::half_t::bitcast(__half_as_ushort(__float2half_rn(gpu_fma_ftz(t, kdq, bias[i]))));
      }
    } else {
      CUTLASS_PRAGMA_UNROLL
      for (int i = 0; i < N; ++i) {
        const float t = gpu_mul_ftz(gpu_mul_ftz(acc[i], row_scale[i]), col_scale[i]);
        out[i] = cutlass::half_t::bitcast(__half_as_ushort(__float2half_rn(gpu_mul_ftz(t, kdq))));
      }
    }
    return out;
  }
};

// BNB_INT8_CUTLASS_PDL=1 (read once): the kernels are launched as programmatic dependents
// (launch_with_pdl) of the kernel before them in the stream (the quantization): a kernel starts
// while that one finishes, its producer waits for it (griddepcontrol.wait) before its first load,
// and it lets the next dependent kernel (the outlier step) start after its last main-loop tile.
// Off by default: on an H200 (bench/results/h200_run22) the layer gains 1-1.6 us at M = 64 and at
// 16 x 8192 and loses 2.9 us at M = 256 (the early product blocks hold multiprocessors the
// quantization's blocks still need). The plugin and the bench both ask here.
inline bool cutlass_pdl() {
  static const bool on = env_on("BNB_INT8_CUTLASS_PDL");
  return on;
}

// ------------------------------------------------------------------ the GEMM types
//
// A [M, K] int8 row-major (K-major), W [N, K] int8 row-major = B [K, N] column-major (K-major),
// D [M, N] fp16 row-major, no C. The EVT: DequantFn(acc, row_stats[m] (a column vector: one value
// per row of D), col_stats[n] (a row vector), bias[n] (a row vector, null = no bias)). TMA wants
// 16-byte strides and bases: K % 16 == 0, N % 8 == 0, every pointer 16-byte aligned.
template <class TileShape, class ClusterShape, class KernelSchedule, class EpilogueSchedule>
struct Int8DequantGemm {
  using ElementD = cutlass::half_t;
  using LayoutA = cutlass::layout::RowMajor;
  using LayoutB = cutlass::layout::ColumnMajor;
  using LayoutD = cutlass::layout::RowMajor;
  static constexpr int kAlignAB = 16;  // int8 elements: 16 bytes
  static constexpr int kAlignD = 8;    // fp16 elements: 16 bytes

  using RowStats = cutlass::epilogue::fusion::Sm90ColBroadcast<0, TileShape, float, float>;
  using ColStats = cutlass::epilogue::fusion::Sm90RowBroadcast<0, TileShape, float, float>;
  using Bias = cutlass::epilogue::fusion::Sm90RowBroadcast<0, TileShape, cutlass::half_t, float>;
  using Node = cutlass::epilogue::fusion::Sm90Compute<DequantFn, ElementD, float,
                                                      cutlass::FloatRoundStyle::round_to_nearest>;
  using EVT = cutlass::epilogue::fusion::Sm90EVT<Node, cutlass::epilogue::fusion::Sm90AccFetch, RowStats, ColStats,
                                                 Bias>;

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, int32_t, float, void, LayoutD, kAlignD, ElementD, LayoutD,
      kAlignD, EpilogueSchedule, EVT>::CollectiveOp;

  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, int8_t, LayoutA, kAlignAB, int8_t, LayoutB, kAlignAB,
      int32_t, TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      KernelSchedule>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, CollectiveMainloop,
                                                      CollectiveEpilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};

// The arguments of one product: out [M, N] (fp16) = dequant(q [M, K] W[N, K]^T) with row_stats
// [M], col_stats [N] and bias [N] (fp16, or null). Host only; the TMA descriptors are built from
// them by Gemm::initialize.
template <class G>
typename G::Gemm::Arguments make_arguments(int M, int N, int K, const int8_t* A, const int8_t* W,
                                           const float* row_stats, const float* col_stats, const void* bias, void* D,
                                           const cutlass::KernelHardwareInfo& hw) {
  using Kernel = typename G::Gemm::GemmKernel;
  const auto sA = cutlass::make_cute_packed_stride(typename Kernel::StrideA{}, cute::make_shape(M, K, 1));
  const auto sB = cutlass::make_cute_packed_stride(typename Kernel::StrideB{}, cute::make_shape(N, K, 1));
  const auto sC = cutlass::make_cute_packed_stride(typename Kernel::StrideC{}, cute::make_shape(M, N, 1));
  const auto sD = cutlass::make_cute_packed_stride(typename Kernel::StrideD{}, cute::make_shape(M, N, 1));
  typename G::Gemm::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                                   {M, N, K, 1},
                                   {A, sA, W, sB},
                                   {{}, nullptr, sC, static_cast<cutlass::half_t*>(D), sD},
                                   hw};
  // EVT arguments: the children in order (acc, row_stats, col_stats, bias), then the node.
  auto& t = args.epilogue.thread;
  cute::get<1>(t).ptr_col = row_stats;
  cute::get<2>(t).ptr_row = col_stats;
  cute::get<3>(t).ptr_row = static_cast<const cutlass::half_t*>(bias);
  cute::get<3>(t).null_default = cutlass::half_t(0.0f);
  cute::get<4>(t).has_bias = bias != nullptr ? 1 : 0;
  return args;
}

// ------------------------------------------------------------------ the configurations
//
// Each with the name the bench prints and BNB_INT8_CUTLASS=<name> selects (int8_cutlass_sm90.cu).
namespace cfg {
using namespace cute;
namespace cg = cutlass::gemm;
namespace ce = cutlass::epilogue;

// K: 128 bytes of int8 a tile; clusters along M.
template <int M, int N, int C>
using CoopG = Int8DequantGemm<Shape<Int<M>, Int<N>, _128>, Shape<Int<C>, _1, _1>,
                              cg::KernelTmaWarpSpecializedCooperative, ce::TmaWarpSpecializedCooperative>;
template <int M, int N, class KernelSchedule>
using WsG = Int8DequantGemm<Shape<Int<M>, Int<N>, _128>, Shape<_1, _1, _1>, KernelSchedule, ce::TmaWarpSpecialized>;
using Ping = cg::KernelTmaWarpSpecializedPingpong;
using Ws = cg::KernelTmaWarpSpecialized;

struct Coop128x128 : CoopG<128, 128, 1> { static constexpr char kName[] = "coop_128x128x128_c1"; };
struct Coop128x128C2 : CoopG<128, 128, 2> { static constexpr char kName[] = "coop_128x128x128_c2x1"; };
struct Coop128x256 : CoopG<128, 256, 1> { static constexpr char kName[] = "coop_128x256x128_c1"; };
struct Ping64x128 : WsG<64, 128, Ping> { static constexpr char kName[] = "ping_64x128x128_c1"; };
struct Ping128x64 : WsG<128, 64, Ping> { static constexpr char kName[] = "ping_128x64x128_c1"; };
struct Ws64x128 : WsG<64, 128, Ws> { static constexpr char kName[] = "ws_64x128x128_c1"; };
// Narrower tiles for M <= 64, where 64 x 128 tiles leave most multiprocessors idle (N = 4096: 32
// tiles at M <= 64) and the product is a stream of W: more tiles, each streaming fewer rows of W.
struct Ws64x64 : WsG<64, 64, Ws> { static constexpr char kName[] = "ws_64x64x128_c1"; };
struct Ws64x32 : WsG<64, 32, Ws> { static constexpr char kName[] = "ws_64x32x128_c1"; };

// Every configuration: the plugin's table of names (BNB_INT8_CUTLASS=<name>) and the bench's list
// are made from it.
template <class... G>
struct List {};
using All = List<Coop128x128, Coop128x128C2, Coop128x256, Ping64x128, Ping128x64, Ws64x128, Ws64x64, Ws64x32>;
}  // namespace cfg

}  // namespace int8_cutlass
}  // namespace gpu
}  // namespace bnb

#endif  // BNB_GPU_INT8_CUTLASS_SM90_CUH_
