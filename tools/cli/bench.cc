// `bnb bench`: time the quantization ops through the public C API on one backend and compare the
// achieved bandwidth (each input read once + each output written once) with a copy measured in
// the same run. Prints a table; --json FILE writes the same rows.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bnb.h"
#include "cli.h"
#include "half.h"
#include "int_math.h"

namespace {

struct Options {
  int32_t backend = BNB_BACKEND_AUTO;
  int64_t n = INT64_C(64) << 20;
  int32_t threads = 0;
  int reps = 10;
  std::vector<int32_t> dtypes = {BNB_F32};
  std::string json;
};

struct Row {
  std::string op, dtype;
  int64_t blocksize;
  double ms, gbps, pct_copy;
};

const char* dtype_label(int32_t d) { return d == BNB_F32 ? "f32" : d == BNB_F16 ? "f16" : "bf16"; }
size_t dtype_bytes(int32_t d) { return d == BNB_F32 ? 4 : 2; }

#define CHECK_OK(expr)                                                                                        \
  do {                                                                                                        \
    const bnb_status_t s_ = (expr);                                                                           \
    if (s_ != BNB_SUCCESS) {                                                                                  \
      std::fprintf(stderr, "%s failed: %s: %s\n", #expr, bnb_status_string(s_), bnb_last_error_message()); \
      std::exit(1);                                                                                           \
    }                                                                                                         \
  } while (0)

// Backend memory that frees itself.
struct Mem {
  bnb_context_t ctx;
  void* p = nullptr;
  Mem(bnb_context_t c, int64_t bytes) : ctx(c) { CHECK_OK(bnb_malloc(ctx, std::max<int64_t>(bytes, 1), &p)); }
  ~Mem() { bnb_free(ctx, p); }
  template <typename T>
  T* as() const { return static_cast<T*>(p); }
};

double median_ms(bnb_context_t ctx, int reps, const std::function<void()>& op) {
  op();  // warm-up: page faults, caches, lazy initialisation
  CHECK_OK(bnb_synchronize(ctx, nullptr));
  std::vector<double> times;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    op();
    CHECK_OK(bnb_synchronize(ctx, nullptr));
    const auto t1 = std::chrono::steady_clock::now();
    times.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

// Copy bandwidth of the backend, counting bytes read + written: on the CPU `threads` threads each
// copy a slice; on a GPU one device-to-device copy.
double copy_gbps(bnb_context_t ctx, int32_t kind, int64_t bytes, int threads, int reps) {
  Mem src(ctx, bytes), dst(ctx, bytes);
  std::vector<uint8_t> host(static_cast<size_t>(bytes), 1);
  CHECK_OK(bnb_memcpy(ctx, src.p, host.data(), bytes, BNB_MEMCPY_HOST_TO_BACKEND, nullptr));
  CHECK_OK(bnb_memcpy(ctx, dst.p, host.data(), bytes, BNB_MEMCPY_HOST_TO_BACKEND, nullptr));
  std::function<void()> op;
  if (kind == BNB_BACKEND_CPU) {
    // At least 1 MiB a thread, so that starting threads does not dominate the copy's time.
    const int64_t used = std::max<int64_t>(1, std::min<int64_t>(threads, bytes >> 20));
    op = [&, used] {
      std::vector<std::thread> pool;
      const int64_t chunk = bnb::ceil_div(bytes, used);
      for (int64_t t = 0; t < used; ++t) {
        const int64_t lo = t * chunk, hi = std::min(bytes, lo + chunk);
        if (lo >= hi) break;
        pool.emplace_back([&, lo, hi] { std::memcpy(dst.as<uint8_t>() + lo, src.as<uint8_t>() + lo, hi - lo); });
      }
      for (auto& th : pool) th.join();
    };
  } else {
    op = [&] { CHECK_OK(bnb_memcpy(ctx, dst.p, src.p, bytes, BNB_MEMCPY_BACKEND_TO_BACKEND, nullptr)); };
  }
  const double ms = median_ms(ctx, reps, op);
  return 2.0 * static_cast<double>(bytes) / (ms * 1e6);
}

// Below this the copy and the ops take a few microseconds, where thread start-up and the clock
// decide the figures (a copy at "0.0 GB/s", ops at thousands of per cent of it).
constexpr int64_t kMinElements = INT64_C(1) << 20;
constexpr int64_t kMaxElements = INT64_C(1) << 32;

const char kBenchUsage[] =
    "usage: bnb bench [--backend auto|cpu|cuda|hip] [--n ELEMENTS] [--threads T] [--reps R]\n"
    "                 [--dtype f32|f16|bf16|all] [--json FILE]\n"
    "  --backend  backend to measure (default auto: $BNB_BACKEND, else the best available)\n"
    "  --n        elements per tensor, 1048576 to 4294967296 (default 67108864)\n"
    "  --threads  CPU threads, 0 to 4096 (default 0: $BNB_NUM_THREADS, else all cores)\n"
    "  --reps     timed repetitions per op, 1 to 100000; the median is shown (default 10)\n"
    "  --dtype    input/output type of the ops (default f32)\n"
    "  --json     also write the rows to FILE\n";

// A whole decimal number in [lo, hi], or false.
bool parse_int(const std::string& text, int64_t lo, int64_t hi, int64_t* out) {
  if (text.empty() || !(std::isdigit(static_cast<unsigned char>(text[0])) || text[0] == '-')) return false;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0' || v < lo || v > hi) return false;
  *out = v;
  return true;
}

// Writes a usage error to stderr; the caller returns exit status 2.
bool usage_error(const char* format, const std::string& a, const std::string& b = "") {
  std::fprintf(stderr, "bnb bench: ");
  std::fprintf(stderr, format, a.c_str(), b.c_str());
  std::fprintf(stderr, "\nrun 'bnb bench --help' for the options\n");
  return false;
}

// Fills `o` from the arguments (--name VALUE or --name=VALUE). False (after a message) for a
// usage error; *help is set for --help.
bool parse(const std::vector<std::string>& args, Options* o, bool* help) {
  for (size_t i = 0; i < args.size(); ++i) {
    std::string name = args[i], value;
    bool has_value = false;
    const size_t eq = name.find('=');
    if (name.rfind("--", 0) == 0 && eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (name == "--help" || name == "-h") {
      *help = true;
      return true;
    }
    const bool known = name == "--backend" || name == "--n" || name == "--threads" || name == "--reps" ||
                       name == "--dtype" || name == "--json";
    if (!known) return usage_error("unknown argument '%s'", args[i]);
    if (!has_value) {
      if (i + 1 >= args.size()) return usage_error("%s needs a value", name);
      value = args[++i];
    }
    int64_t v = 0;
    if (name == "--backend") {
      if (value == "auto") o->backend = BNB_BACKEND_AUTO;
      else if (value == "cpu") o->backend = BNB_BACKEND_CPU;
      else if (value == "cuda") o->backend = BNB_BACKEND_CUDA;
      else if (value == "hip") o->backend = BNB_BACKEND_HIP;
      else return usage_error("--backend '%s' is not one of auto, cpu, cuda, hip", value);
    } else if (name == "--n") {
      if (!parse_int(value, INT64_MIN, INT64_MAX, &v))
        return usage_error("--n '%s' is not a whole number of elements (%s)", value,
                           std::to_string(kMinElements) + " to " + std::to_string(kMaxElements));
      if (v < kMinElements)
        return usage_error("--n %s is too small to time: use at least %s elements", value,
                           std::to_string(kMinElements));
      if (v > kMaxElements)
        return usage_error("--n %s is too large: use at most %s elements", value, std::to_string(kMaxElements));
      o->n = v;
    } else if (name == "--threads") {
      // The upper limit is bnb_context_create's to check (and to name).
      if (!parse_int(value, 0, INT32_MAX, &v))
        return usage_error("--threads '%s' is not valid: use 0 (default) or a number of threads", value);
      o->threads = static_cast<int32_t>(v);
    } else if (name == "--reps") {
      if (!parse_int(value, 1, 100000, &v)) return usage_error("--reps '%s' is not valid: use 1 to 100000", value);
      o->reps = static_cast<int>(v);
    } else if (name == "--dtype") {
      if (value == "all") o->dtypes = {BNB_F32, BNB_F16, BNB_BF16};
      else if (value == "f32") o->dtypes = {BNB_F32};
      else if (value == "f16") o->dtypes = {BNB_F16};
      else if (value == "bf16") o->dtypes = {BNB_BF16};
      else return usage_error("--dtype '%s' is not one of f32, f16, bf16, all", value);
    } else {  // --json
      if (value.empty()) return usage_error("--json needs a file name", "");
      o->json = value;
    }
  }
  return true;
}

}  // namespace

int run_bench(const std::vector<std::string>& args) {
  Options o;
  bool help = false;
  if (!parse(args, &o, &help)) return 2;
  if (help) {
    std::printf("%s", kBenchUsage);
    return 0;
  }
  bnb_context_options_t copts;
  bnb_context_options_init(&copts);
  copts.backend = o.backend;
  copts.num_threads = o.threads;
  bnb_context_t ctx = nullptr;
  CHECK_OK(bnb_context_create(&copts, &ctx));
  int32_t kind = 0, device = 0;
  CHECK_OK(bnb_context_get_backend(ctx, &kind, &device));
  const char* backend_names[] = {"auto", "cpu", "cuda", "hip"};
  // The context's thread count: the option, else $BNB_NUM_THREADS (valid: the context was made),
  // else all cores.
  int threads = o.threads;
  if (const char* env = std::getenv("BNB_NUM_THREADS"); threads == 0 && env != nullptr && *env != '\0')
    threads = std::atoi(env);
  if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const int64_t n = o.n;
  std::printf("bnb bench: backend %s, n = %lld, threads = %d, median of %d\n", backend_names[kind],
              static_cast<long long>(n), kind == BNB_BACKEND_CPU ? threads : 0, o.reps);

  const double copy = copy_gbps(ctx, kind, n * 4, threads, o.reps);
  std::printf("copy bandwidth (read + write): %.1f GB/s\n\n", copy);
  std::vector<Row> rows;
  auto record = [&](const std::string& op, int32_t dtype, int64_t bs, double bytes, double ms) {
    Row r{op, dtype_label(dtype), bs, ms, bytes / (ms * 1e6), 0.0};
    r.pct_copy = 100.0 * r.gbps / copy;
    rows.push_back(r);
    // Two decimals: under qemu-user (the aarch64 tests) 4-bit quantize runs at 0.04 GB/s.
    std::printf("%-26s %-5s bs=%-5lld %9.3f ms %8.2f GB/s %6.1f %% of copy\n", op.c_str(), r.dtype.c_str(),
                static_cast<long long>(bs), ms, r.gbps, r.pct_copy);
    std::fflush(stdout);
  };

  std::vector<float> host(static_cast<size_t>(n));
  std::mt19937 rng(42);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (auto& x : host) x = dist(rng);

  for (int32_t dtype : o.dtypes) {
    const size_t es = dtype_bytes(dtype);
    std::vector<uint8_t> typed(static_cast<size_t>(n) * es);
    for (int64_t i = 0; i < n; ++i) {
      if (dtype == BNB_F32) std::memcpy(&typed[i * 4], &host[i], 4);
      else {
        const uint16_t h = dtype == BNB_F16 ? bnb::f32_to_f16(host[i]) : bnb::f32_to_bf16(host[i]);
        std::memcpy(&typed[i * 2], &h, 2);
      }
    }
    Mem A(ctx, n * static_cast<int64_t>(es)), out(ctx, n * static_cast<int64_t>(es)), q(ctx, n);
    Mem absmax(ctx, (n / 32 + 1) * 4), qabs(ctx, n / 32 + 1), absmax2(ctx, (n / 32 / 256 + 2) * 4), offset(ctx, 4);
    CHECK_OK(bnb_memcpy(ctx, A.p, typed.data(), static_cast<int64_t>(typed.size()), BNB_MEMCPY_HOST_TO_BACKEND,
                        nullptr));
    const double in_bytes = static_cast<double>(n) * es;

    for (int64_t bs : {int64_t(4096), int64_t(256)}) {
      const double nb = std::ceil(static_cast<double>(n) / bs);
      double ms = median_ms(ctx, o.reps, [&] {
        CHECK_OK(bnb_quantize_blockwise(ctx, dtype, A.p, n, bs, nullptr, q.as<uint8_t>(), absmax.as<float>(), nullptr));
      });
      record("quantize_blockwise", dtype, bs, in_bytes + n + 4 * nb, ms);
      ms = median_ms(ctx, o.reps, [&] {
        CHECK_OK(bnb_dequantize_blockwise(ctx, q.as<uint8_t>(), absmax.as<float>(), nullptr, n, bs, dtype, out.p,
                                          nullptr));
      });
      record("dequantize_blockwise", dtype, bs, n + 4 * nb + in_bytes, ms);
    }
    const int64_t bs = 64;
    const double nb = std::ceil(static_cast<double>(n) / bs);
    const double packed = std::ceil(n / 2.0);
    for (int32_t qt : {BNB_NF4, BNB_FP4}) {
      const char* name = qt == BNB_NF4 ? "nf4" : "fp4";
      double ms = median_ms(ctx, o.reps, [&] {
        CHECK_OK(bnb_quantize_4bit(ctx, qt, dtype, A.p, n, bs, q.as<uint8_t>(), absmax.as<float>(), nullptr));
      });
      record(std::string("quantize_4bit ") + name, dtype, bs, in_bytes + packed + 4 * nb, ms);
      bnb_scales_t plain;
      bnb_scales_init(&plain);
      plain.absmax = absmax.as<float>();
      ms = median_ms(ctx, o.reps, [&] {
        CHECK_OK(bnb_dequantize_4bit(ctx, qt, q.as<uint8_t>(), &plain, n, bs, dtype, out.p, nullptr));
      });
      record(std::string("dequantize_4bit ") + name, dtype, bs, packed + 4 * nb + in_bytes, ms);
      if (qt == BNB_NF4) {
        const int64_t nblocks = static_cast<int64_t>(nb);
        CHECK_OK(bnb_compress_absmax(ctx, absmax.as<float>(), nblocks, qabs.as<uint8_t>(), absmax2.as<float>(),
                                     offset.as<float>(), nullptr));
        bnb_scales_t nested;
        bnb_scales_init(&nested);
        nested.absmax_q = qabs.as<uint8_t>();
        nested.absmax2 = absmax2.as<float>();
        nested.offset = offset.as<float>();
        ms = median_ms(ctx, o.reps, [&] {
          CHECK_OK(bnb_dequantize_4bit(ctx, qt, q.as<uint8_t>(), &nested, n, bs, dtype, out.p, nullptr));
        });
        record("dequantize_4bit nf4 nested", dtype, bs, packed + nb + 4 * std::ceil(nb / 256) + 4 + in_bytes, ms);
      }
    }
  }

  if (!o.json.empty()) {
    FILE* f = std::fopen(o.json.c_str(), "w");
    if (f == nullptr) {
      std::fprintf(stderr, "cannot write %s\n", o.json.c_str());
      return 1;
    }
    bnb_backend_info_t info{};
    info.struct_size = sizeof info;
    int32_t count = 0;
    bnb_backend_count(&count);
    std::string detail;
    for (int32_t i = 0; i < count; ++i)
      if (bnb_backend_get_info(i, &info) == BNB_SUCCESS && info.kind == kind) detail = info.detail;
    for (char& c : detail)
      if (c == '"' || c == '\\') c = '\'';
    std::fprintf(f, "{\n  \"bnb_version\": \"%s\",\n  \"backend\": \"%s\",\n  \"detail\": \"%s\",\n", bnb_version_string(),
                 backend_names[kind], detail.c_str());
    std::fprintf(f, "  \"n\": %lld,\n  \"threads\": %d,\n  \"reps\": %d,\n  \"copy_gbps\": %.3f,\n  \"rows\": [\n",
                 static_cast<long long>(n), kind == BNB_BACKEND_CPU ? threads : 0, o.reps, copy);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      std::fprintf(f,
                   "    {\"op\": \"%s\", \"dtype\": \"%s\", \"blocksize\": %lld, \"ms\": %.4f, \"gbps\": %.3f, "
                   "\"pct_copy\": %.2f}%s\n",
                   r.op.c_str(), r.dtype.c_str(), static_cast<long long>(r.blocksize), r.ms, r.gbps, r.pct_copy,
                   i + 1 < rows.size() ? "," : "");
    }
    std::fprintf(f, "  ]\n}\n");
    std::fclose(f);
    std::printf("\nwrote %s\n", o.json.c_str());
  }
  bnb_context_destroy(ctx);
  return 0;
}
