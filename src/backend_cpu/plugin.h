// Shared declarations of the CPU backend plugin (libbnb_backend_cpu.so).
//
// Each operation family lives in its own file and fills its slots of the ops table from a
// register_<family>_ops() function: quant.cc (8-bit / 4-bit blockwise, double quantization),
// gemm4.cc, int8.cc, optim.cc. plugin.cc owns the table, contexts and the required ops.
#ifndef BNB_BACKEND_CPU_PLUGIN_H_
#define BNB_BACKEND_CPU_PLUGIN_H_

#include <cstdint>
#include <new>
#include <string>

#include "backend_abi.h"
#include "thread_pool.h"

namespace bnb {
namespace cpu {

// What a family needs from a context (the `void* impl` every op receives).
struct Context {
  explicit Context(int32_t threads) : num_threads(threads), pool(threads) {}
  int32_t num_threads;  // >= 1
  ThreadPool pool;      // safe for concurrent callers
};

inline Context* context_of(void* impl) { return static_cast<Context*>(impl); }

// The host's callbacks (errors and logging), set by bnb_backend_init before any op runs.
const bnb_host_api_t* host();

// Convenience for ops: records `message` for the calling thread and returns `status`.
bnb_status_t fail(bnb_status_t status, const char* message);

// Runs an op's kernel, turning what it throws into a status named after `op`: std::bad_alloc (the
// only failure a kernel has) into BNB_ERR_OUT_OF_MEMORY, anything else into BNB_ERR_INTERNAL.
template <class Fn>
bnb_status_t guarded(const char* op, const Fn& fn) {
  try {
    fn();
    return BNB_SUCCESS;
  } catch (const std::bad_alloc&) {
    return fail(BNB_ERR_OUT_OF_MEMORY, (std::string(op) + ": out of memory").c_str());
  } catch (...) {
    return fail(BNB_ERR_INTERNAL, (std::string(op) + ": unexpected failure").c_str());
  }
}

// Family registration; each fills its own slots and leaves the others alone.
void register_quant_ops(bnb_backend_ops_t* ops);
void register_gemm4_ops(bnb_backend_ops_t* ops);
void register_int8_ops(bnb_backend_ops_t* ops);
void register_optim_ops(bnb_backend_ops_t* ops);

}  // namespace cpu
}  // namespace bnb

#endif  // BNB_BACKEND_CPU_PLUGIN_H_
