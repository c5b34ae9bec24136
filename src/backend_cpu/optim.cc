// The optimizer family's ops: a thin adapter from the plugin ABI to optim_kernels.h, and paged
// memory, which on the CPU is ordinary host memory handed out zero-filled (as the reference's
// paged optimizer state is) with a prefetch that has nothing to do.
#include <cstdlib>
#include <cstring>

#include "optim_kernels.h"
#include "plugin.h"

namespace bnb {
namespace cpu {
namespace {

bnb_status_t op_optimizer_update(void* impl, const bnb_optimizer_params_t* params,
                                 const bnb_optimizer_tensors_t* tensors, void* /*stream*/) {
  return guarded("optimizer_update", [&] { optimizer_run(context_of(impl)->pool, *params, *tensors); });
}

bnb_status_t op_paged_alloc(void* /*impl*/, int64_t bytes, void** ptr) {
  const size_t rounded = (static_cast<size_t>(bytes) + 63) / 64 * 64;
  *ptr = std::aligned_alloc(64, rounded);
  if (*ptr == nullptr) return fail(BNB_ERR_OUT_OF_MEMORY, "paged_alloc: out of host memory");
  std::memset(*ptr, 0, rounded);
  return BNB_SUCCESS;
}

bnb_status_t op_paged_free(void* /*impl*/, void* ptr) {
  std::free(ptr);
  return BNB_SUCCESS;
}

bnb_status_t op_paged_prefetch(void* /*impl*/, void* /*ptr*/, int64_t /*bytes*/, int32_t /*to_device*/,
                               void* /*stream*/) {
  return BNB_SUCCESS;
}

}  // namespace

void register_optim_ops(bnb_backend_ops_t* ops) {
  ops->optimizer_update = op_optimizer_update;
  ops->paged_alloc = op_paged_alloc;
  ops->paged_free = op_paged_free;
  ops->paged_prefetch = op_paged_prefetch;
}

}  // namespace cpu
}  // namespace bnb
