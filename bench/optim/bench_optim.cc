// bnb_optimizer_update through the public API, on any backend: median time per step, the
// bytes a step must move (p read + written, g read, states read + written) and that traffic's
// share of the copy bandwidth measured in the same run.
//
//   bnb_bench_optim [--backend cpu|cuda|hip] [--threads 2] [--mode cpu|gpu] [--iters 20]
//                   [--n 33554432] [--only "AdamW 8-bit"] [--json out.json]
//
// Modes:
//   cpu (default on the CPU backend): one fp32 tensor of --n parameters; every optimizer in
//       8-bit plus 32-bit AdamW. Copy bandwidth: `threads` threads each memcpy a part of a
//       256 MiB buffer (STREAM-style: bytes read + bytes written, best of 5).
//   gpu (default on GPU backends): a 1.08 B-parameter model as 24 fp32 tensors of 4096 x 11008,
//       and 1000 tensors of 65536 (a call per tensor, then one bnb_optimizer_update_multi call
//       for all); AdamW 8-bit, Lion 8-bit and AdamW 32-bit; one step = every tensor updated, then
//       one synchronize. Copy bandwidth: bnb_memcpy device to device.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <time.h>

#include "bnb.h"
#include "bench_util.h"
#include "optim_traits.h"

namespace {

// CPU time of the whole process (all threads): what the work costs when the machine is shared.
double process_cpu_seconds() {
  timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

struct Config {
  const char* name;
  int32_t opt;
  int32_t bits;
};

bool two_states(int32_t opt) { return bnb::optim_traits(opt).states == 2; }

// Bytes one step must move per fp32 parameter.
double bytes_per_param(const Config& c) {
  const bnb::OptimTraits traits = bnb::optim_traits(c.opt);
  const double states = traits.states + traits.state1_copies - 1;  // state tensors of n elements
  return 4.0 * 2 + 4.0 + states * 2.0 * (c.bits == 8 ? 1.0 : 4.0);
}

// One parameter tensor with its state, in backend memory.
struct Tensor {
  int64_t n = 0;
  void *p = nullptr, *g = nullptr, *s1 = nullptr, *s2 = nullptr;
  float *a1 = nullptr, *a2 = nullptr;
};

void* alloc_zero(bnb_context_t ctx, int64_t bytes, const std::vector<uint8_t>& zeros) {
  void* ptr = nullptr;
  BNB_OK(bnb_malloc(ctx, bytes, &ptr));
  for (int64_t off = 0; off < bytes; off += static_cast<int64_t>(zeros.size())) {
    const int64_t len = std::min<int64_t>(bytes - off, static_cast<int64_t>(zeros.size()));
    BNB_OK(bnb_memcpy(ctx, static_cast<uint8_t*>(ptr) + off, zeros.data(), len, BNB_MEMCPY_HOST_TO_BACKEND, nullptr));
  }
  return ptr;
}

Tensor make_tensor(bnb_context_t ctx, const Config& c, int64_t n, const std::vector<float>& pinit,
                   const std::vector<float>& ginit, const std::vector<uint8_t>& zeros) {
  Tensor t;
  t.n = n;
  BNB_OK(bnb_malloc(ctx, n * 4, &t.p));
  BNB_OK(bnb_malloc(ctx, n * 4, &t.g));
  BNB_OK(bnb_memcpy(ctx, t.p, pinit.data(), n * 4, BNB_MEMCPY_HOST_TO_BACKEND, nullptr));
  BNB_OK(bnb_memcpy(ctx, t.g, ginit.data(), n * 4, BNB_MEMCPY_HOST_TO_BACKEND, nullptr));
  const int64_t es = c.bits == 8 ? 1 : 4;
  const int64_t copies = bnb::optim_traits(c.opt).state1_copies;
  const int64_t nb = (n + 255) / 256;
  t.s1 = alloc_zero(ctx, n * es * copies, zeros);
  if (two_states(c.opt)) t.s2 = alloc_zero(ctx, n * es, zeros);
  if (c.bits == 8) {
    t.a1 = static_cast<float*>(alloc_zero(ctx, nb * 4 * copies, zeros));
    if (two_states(c.opt)) t.a2 = static_cast<float*>(alloc_zero(ctx, nb * 4, zeros));
  }
  return t;
}

void free_tensor(bnb_context_t ctx, Tensor& t) {
  for (void* p : {t.p, t.g, t.s1, t.s2, static_cast<void*>(t.a1), static_cast<void*>(t.a2)})
    if (p != nullptr) BNB_OK(bnb_free(ctx, p));
  t = Tensor();
}

bnb_optimizer_params_t params_for(const Config& c, int64_t n, int64_t step) {
  bnb_optimizer_params_t p;
  BNB_OK(bnb_optimizer_params_init(&p));
  p.optimizer = c.opt;
  p.state_bits = c.bits;
  p.param_dtype = BNB_F32;
  p.n = n;
  p.step = step;
  switch (c.opt) {
    case BNB_OPT_ADAM: p.weight_decay = 0.01f; break;  // AdamW
    case BNB_OPT_LION: p.lr = 1e-4f; p.beta2 = 0.99f; p.weight_decay = 0.01f; break;
    case BNB_OPT_MOMENTUM: p.lr = 0.01f; break;
    case BNB_OPT_RMSPROP: p.lr = 0.01f; p.beta1 = 0.99f; break;
    case BNB_OPT_ADAGRAD: p.lr = 0.01f; p.eps = 1e-10f; break;
    case BNB_OPT_ADEMAMIX: p.weight_decay = 0.01f; break;
    default: break;
  }
  return p;
}

// One step of every tensor: a bnb_optimizer_update call each, or (multi) one
// bnb_optimizer_update_multi call for all of them.
void step_all(bnb_context_t ctx, const Config& c, std::vector<Tensor>& ts, int64_t step, bool multi = false) {
  if (multi) {
    const bnb_optimizer_params_t p = params_for(c, 0, step);
    std::vector<bnb_optimizer_tensors_t> xs(ts.size());
    std::vector<int64_t> ns(ts.size());
    for (size_t i = 0; i < ts.size(); ++i) {
      BNB_OK(bnb_optimizer_tensors_init(&xs[i]));
      xs[i].p = ts[i].p;
      xs[i].g = ts[i].g;
      xs[i].state1 = ts[i].s1;
      xs[i].state2 = ts[i].s2;
      xs[i].absmax1 = ts[i].a1;
      xs[i].absmax2 = ts[i].a2;
      ns[i] = ts[i].n;
    }
    BNB_OK(bnb_optimizer_update_multi(ctx, &p, static_cast<int32_t>(ts.size()), xs.data(), ns.data(), nullptr));
    BNB_OK(bnb_synchronize(ctx, nullptr));
    return;
  }
  for (Tensor& t : ts) {
    const bnb_optimizer_params_t p = params_for(c, t.n, step);
    bnb_optimizer_tensors_t x;
    BNB_OK(bnb_optimizer_tensors_init(&x));
    x.p = t.p;
    x.g = t.g;
    x.state1 = t.s1;
    x.state2 = t.s2;
    x.absmax1 = t.a1;
    x.absmax2 = t.a2;
    BNB_OK(bnb_optimizer_update(ctx, &p, &x, nullptr));
  }
  BNB_OK(bnb_synchronize(ctx, nullptr));
}

struct Result {
  std::string label, config;
  int64_t tensors = 0, n_each = 0;
  double median_ms = 0, gbps = 0, share = 0;
  double cpu_ns_per_param = 0;  // process CPU time per parameter and step (host backends)
};

Result time_config(bnb_context_t ctx, const Config& c, int64_t count, int64_t n, int iters, double copy_gbps,
                   const std::string& label, bool multi = false) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> pinit(static_cast<size_t>(n)), ginit(static_cast<size_t>(n));
  for (auto& v : pinit) v = nd(rng);
  for (auto& v : ginit) v = 0.01f * nd(rng);
  const std::vector<uint8_t> zeros(std::min<int64_t>(n * 4, 64 << 20), 0);
  std::vector<Tensor> ts;
  for (int64_t i = 0; i < count; ++i) ts.push_back(make_tensor(ctx, c, n, pinit, ginit, zeros));
  step_all(ctx, c, ts, 1, multi);  // warm-up (first touch, plans, lazy module load)
  std::vector<double> ms;
  const double cpu0 = process_cpu_seconds();
  for (int it = 0; it < iters; ++it) {
    const auto t0 = Clock::now();
    step_all(ctx, c, ts, 2 + it, multi);
    ms.push_back(1e3 * seconds_since(t0));
  }
  const double cpu_s = process_cpu_seconds() - cpu0;
  for (Tensor& t : ts) free_tensor(ctx, t);
  std::sort(ms.begin(), ms.end());
  Result r;
  r.label = label;
  r.config = c.name;
  r.tensors = count;
  r.n_each = n;
  r.median_ms = ms[ms.size() / 2];
  r.gbps = bytes_per_param(c) * static_cast<double>(n * count) / (r.median_ms * 1e-3) / 1e9;
  r.share = copy_gbps > 0 ? r.gbps / copy_gbps : 0;
  r.cpu_ns_per_param = 1e9 * cpu_s / (static_cast<double>(n * count) * iters);
  std::printf("%-22s %-16s %6lld x %-10lld %10.3f ms %9.1f GB/s %7.1f %% %9.2f\n", label.c_str(), c.name,
              static_cast<long long>(count), static_cast<long long>(n), r.median_ms, r.gbps, 100.0 * r.share,
              r.cpu_ns_per_param);
  std::fflush(stdout);
  return r;
}

double host_copy_gbps(int threads) {
  const size_t bytes = 256u << 20;
  std::vector<uint8_t> a(bytes, 1), b(bytes, 2);
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
    std::vector<std::thread> pool;
    const size_t part = bytes / static_cast<size_t>(threads);
    for (int t = 0; t < threads; ++t)
      pool.emplace_back([&, t] { std::memcpy(b.data() + t * part, a.data() + t * part, part); });
    for (auto& th : pool) th.join();
    best = std::max(best, 2.0 * static_cast<double>(bytes) / seconds_since(t0) / 1e9);
  }
  return best;
}

double backend_copy_gbps(bnb_context_t ctx) {
  const int64_t bytes = int64_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  BNB_OK(bnb_malloc(ctx, bytes, &a));
  BNB_OK(bnb_malloc(ctx, bytes, &b));
  BNB_OK(bnb_memcpy(ctx, b, a, bytes, BNB_MEMCPY_BACKEND_TO_BACKEND, nullptr));
  BNB_OK(bnb_synchronize(ctx, nullptr));
  double best = 0;
  for (int rep = 0; rep < 5; ++rep) {
    const auto t0 = Clock::now();
    BNB_OK(bnb_memcpy(ctx, b, a, bytes, BNB_MEMCPY_BACKEND_TO_BACKEND, nullptr));
    BNB_OK(bnb_synchronize(ctx, nullptr));
    best = std::max(best, 2.0 * static_cast<double>(bytes) / seconds_since(t0) / 1e9);
  }
  BNB_OK(bnb_free(ctx, a));
  BNB_OK(bnb_free(ctx, b));
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  std::string backend = "cpu", mode, json, only;
  int threads = 2, iters = 20;
  int64_t n = int64_t{1} << 25;
  Args args(argc, argv);
  for (std::string a; args.next_flag(a);) {
    if (a == "--backend") backend = args.value();
    else if (a == "--threads") threads = args.int_value();
    else if (a == "--mode") mode = args.value();
    else if (a == "--iters") iters = args.int_value();
    else if (a == "--n") n = args.int_value();
    else if (a == "--json") json = args.value();
    else if (a == "--only") only = args.value();
    else args.usage("[--backend cpu|cuda|hip] [--threads N] [--mode cpu|gpu] [--iters N] [--n N] [--only NAME] "
                    "[--json PATH]");
  }
  bnb_context_options_t opts;
  BNB_OK(bnb_context_options_init(&opts));
  opts.backend = backend == "cuda" ? BNB_BACKEND_CUDA : backend == "hip" ? BNB_BACKEND_HIP : BNB_BACKEND_CPU;
  opts.num_threads = threads;
  bnb_context_t ctx = nullptr;
  BNB_OK(bnb_context_create(&opts, &ctx));
  if (mode.empty()) mode = backend == "cpu" ? "cpu" : "gpu";

  std::vector<Result> results;
  double copy = 0;
  if (mode == "cpu") {
    copy = opts.backend == BNB_BACKEND_CPU ? host_copy_gbps(threads) : backend_copy_gbps(ctx);
    std::printf("backend %s, %d threads, copy bandwidth %.1f GB/s (read + write)\n", backend.c_str(), threads, copy);
    std::printf("%-22s %-16s %-19s %13s %14s %9s %9s\n", "case", "optimizer", "tensors x n", "median step", "traffic",
                "of copy", "cpu ns/p");
    const Config configs[] = {{"AdamW 8-bit", BNB_OPT_ADAM, 8},       {"Lion 8-bit", BNB_OPT_LION, 8},
                              {"Momentum 8-bit", BNB_OPT_MOMENTUM, 8}, {"RMSprop 8-bit", BNB_OPT_RMSPROP, 8},
                              {"Adagrad 8-bit", BNB_OPT_ADAGRAD, 8},   {"AdEMAMix 8-bit", BNB_OPT_ADEMAMIX, 8},
                              {"AdamW 32-bit", BNB_OPT_ADAM, 32},      {"Lion 32-bit", BNB_OPT_LION, 32}};
    for (const Config& c : configs)
      if (only.empty() || only == c.name) results.push_back(time_config(ctx, c, 1, n, iters, copy, "one tensor"));
  } else {
    copy = backend_copy_gbps(ctx);
    std::printf("backend %s, device copy bandwidth %.1f GB/s (read + write)\n", backend.c_str(), copy);
    std::printf("%-22s %-16s %-19s %13s %14s %9s\n", "case", "optimizer", "tensors x n", "median step", "traffic",
                "of copy");
    const Config configs[] = {{"AdamW 8-bit", BNB_OPT_ADAM, 8}, {"Lion 8-bit", BNB_OPT_LION, 8},
                              {"AdamW 32-bit", BNB_OPT_ADAM, 32}};
    for (const Config& c : configs)
      results.push_back(time_config(ctx, c, 24, int64_t{4096} * 11008, iters, copy, "1.08B (24x4096x11008)"));
    for (const Config& c : configs) results.push_back(time_config(ctx, c, 1000, 65536, iters, copy, "1000 x 65536"));
    for (const Config& c : configs)
      results.push_back(time_config(ctx, c, 1000, 65536, iters, copy, "1000 x 65536 multi", true));
  }
  if (!json.empty()) {
    FILE* f = std::fopen(json.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "cannot write %s\n", json.c_str());
      return 1;
    }
    std::fprintf(f, "{\n  \"benchmark\": \"optimizer_update\",\n  \"backend\": \"%s\",\n  \"mode\": \"%s\",\n",
                 backend.c_str(), mode.c_str());
    std::fprintf(f, "  \"threads\": %d,\n  \"copy_gbps\": %.3f,\n  \"results\": [\n", threads, copy);
    for (size_t i = 0; i < results.size(); ++i) {
      const Result& r = results[i];
      std::fprintf(f,
                   "    {\"case\": \"%s\", \"optimizer\": \"%s\", \"tensors\": %lld, \"n_each\": %lld, "
                   "\"median_ms\": %.4f, \"traffic_gbps\": %.3f, \"share_of_copy\": %.4f, \"cpu_ns_per_param\": %.4f}%s\n",
                   r.label.c_str(), r.config.c_str(), static_cast<long long>(r.tensors),
                   static_cast<long long>(r.n_each), r.median_ms, r.gbps, r.share, r.cpu_ns_per_param,
                   i + 1 < results.size() ? "," : "");
    }
    std::fprintf(f, "  ]\n}\n");
    std::fclose(f);
  }
  BNB_OK(bnb_context_destroy(ctx));
  return 0;
}
