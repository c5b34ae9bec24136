// Misuse that must end in a status and a message, never a crash or an abort (issue 17): statuses
// outside the enum, thread pools that cannot start, the environment, damaged plugins, and
// messages that name the one bad field.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <climits>
#include <cstddef>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include "bnb.h"
#include "cpu_caps.h"
#include "process.h"
#include "util.h"

using namespace bnb_test;

namespace {

// Sets an environment variable for one scope and puts back what was there.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) {
      had_ = true;
      old_ = old;
    }
    if (value != nullptr) setenv(name, value, 1);
    else unsetenv(name);
  }
  ~ScopedEnv() {
    if (had_) setenv(name_.c_str(), old_.c_str(), 1);
    else unsetenv(name_.c_str());
  }

 private:
  std::string name_, old_;
  bool had_ = false;
};

bool build_tree_present() {
  std::ifstream lib(std::string(BNB_BUILD_LIB_DIR) + "/libbnb.so.0");
  return static_cast<bool>(lib);
}

// The probe program is in the build tree; binaries carried to another machine skip its tests.
bool probe_present() { return access(BNB_CONTEXT_PROBE, X_OK) == 0; }

const std::string kProbe = program(BNB_CONTEXT_PROBE);

#define SKIP_WITHOUT_PROBE() \
  if (!probe_present()) GTEST_SKIP() << BNB_CONTEXT_PROBE << " not present"

bool under_address_sanitizer() {
#if defined(__SANITIZE_ADDRESS__)
  return true;
#else
  return false;
#endif
}

}  // namespace

// ---------------------------------------------------------------- status strings

extern "C" const char* bnb_test_status_string_from_c(int32_t status);  // status_string_c.c

TEST(Robust, StatusStringOfAnyValue) {
  // C callers may pass any int: the call is made from C (status_string_c.c), as they make it, so
  // the test itself never holds an out-of-range enum.
  const auto status_string = bnb_test_status_string_from_c;
  for (int32_t s : {12345, -7, 7, -1, INT32_MIN, INT32_MAX})
    EXPECT_STREQ(status_string(s), "BNB_ERR_UNKNOWN_STATUS") << s;
  EXPECT_STREQ(status_string(BNB_ERR_INTERNAL), "BNB_ERR_INTERNAL");
}

// ---------------------------------------------------------------- threads

TEST(Robust, NumThreadsAboveTheCapIsRefused) {
  bnb_context_options_t opts;
  ASSERT_BNB_OK(bnb_context_options_init(&opts));
  bnb_context_t ctx = nullptr;
  for (int32_t threads : {4097, 100000, INT32_MAX, -1}) {
    opts.num_threads = threads;
    EXPECT_FAILS(bnb_context_create(&opts, &ctx), BNB_ERR_INVALID_ARGUMENT, "num_threads");
    EXPECT_NE(std::string(bnb_last_error_message()).find("4096"), std::string::npos) << bnb_last_error_message();
    EXPECT_EQ(ctx, nullptr);
  }
}

TEST(Robust, ThreadsThatCannotStartAreAnErrorNotAnAbort) {
  SKIP_WITHOUT_PROBE();
  if (!cpu_available()) GTEST_SKIP() << "cpu backend not available";
  if (under_address_sanitizer()) GTEST_SKIP() << "AddressSanitizer needs more address space than the limit leaves";
#ifdef BNB_TEST_EMULATOR
  GTEST_SKIP() << "qemu-user does not apply RLIMIT_AS to the program it runs (it would limit itself)";
#endif
  // 256 threads in 64 MiB more address space: the stacks do not fit, so some threads start and
  // then one fails. The pool must join those that started and the call report it.
  const Outcome r = run_command("BNB_BACKEND=cpu " + kProbe +
                            " --threads 256 --address-space-mb 64");
  ASSERT_TRUE(r.exited) << "the probe was killed by a signal:\n" << r.output;
  EXPECT_EQ(r.code, BNB_ERR_OUT_OF_MEMORY) << r.output;
  EXPECT_TRUE(contains(r.output, "worker threads")) << r.output;
  EXPECT_TRUE(contains(r.output, "num_threads = 256")) << r.output;
  EXPECT_TRUE(contains(r.output, "BNB_NUM_THREADS")) << r.output;
}

TEST(Robust, ThreadsWithinTheLimitStart) {
  SKIP_WITHOUT_PROBE();
  if (!cpu_available()) GTEST_SKIP() << "cpu backend not available";
  if (under_address_sanitizer()) GTEST_SKIP() << "AddressSanitizer needs more address space than the limit leaves";
  const Outcome r = run_command("BNB_BACKEND=cpu " + kProbe + " --threads 2 --address-space-mb 256");
  ASSERT_TRUE(r.exited) << r.output;
  EXPECT_EQ(r.code, BNB_SUCCESS) << r.output;
}

// ---------------------------------------------------------------- the environment

TEST(Robust, InvalidNumThreadsVariableIsAnError) {
  bnb_context_t ctx = nullptr;
  for (const char* value : {"0", "-1", "100000", "4097", "abc", "4x", " 4", "+4", "99999999999999999999"}) {
    ScopedEnv env("BNB_NUM_THREADS", value);
    EXPECT_FAILS(bnb_context_create(nullptr, &ctx), BNB_ERR_INVALID_ARGUMENT,
                      std::string("BNB_NUM_THREADS=") + value);
    EXPECT_TRUE(contains(bnb_last_error_message(), "from 1 to 4096")) << bnb_last_error_message();
    EXPECT_EQ(ctx, nullptr);
    // Invalid even where options->num_threads would override it.
    bnb_context_options_t opts;
    bnb_context_options_init(&opts);
    opts.num_threads = 2;
    EXPECT_FAILS(bnb_context_create(&opts, &ctx), BNB_ERR_INVALID_ARGUMENT, "BNB_NUM_THREADS");
  }
  if (!cpu_available()) return;
  for (const char* value : {"1", "3", ""}) {
    ScopedEnv env("BNB_NUM_THREADS", value);
    ScopedEnv backend("BNB_BACKEND", "cpu");
    ASSERT_BNB_OK(bnb_context_create(nullptr, &ctx));
    ASSERT_BNB_OK(bnb_context_destroy(ctx));
  }
}

TEST(Robust, InvalidBackendVariableIsAnError) {
  bnb_context_t ctx = nullptr;
  for (const char* value : {"bogus", "CPU", "Cpu", "AUTO", "cpu "}) {
    ScopedEnv env("BNB_BACKEND", value);
    EXPECT_FAILS(bnb_context_create(nullptr, &ctx), BNB_ERR_INVALID_ARGUMENT, std::string("BNB_BACKEND=") + value);
    EXPECT_TRUE(contains(bnb_last_error_message(), "auto, cpu, cuda or hip")) << bnb_last_error_message();
    EXPECT_EQ(ctx, nullptr);
  }
}

TEST(Robust, InvalidLogLevelVariableIsAnError) {
  bnb_context_t ctx = nullptr;
  for (const char* value : {"garbage", "4", "-1", "2x", "10"}) {
    ScopedEnv env("BNB_LOG_LEVEL", value);
    EXPECT_FAILS(bnb_context_create(nullptr, &ctx), BNB_ERR_INVALID_ARGUMENT,
                      std::string("BNB_LOG_LEVEL=") + value);
    EXPECT_TRUE(contains(bnb_last_error_message(), "0 (quiet)")) << bnb_last_error_message();
    EXPECT_TRUE(contains(bnb_last_error_message(), "3 (debug)")) << bnb_last_error_message();
    EXPECT_EQ(ctx, nullptr);
  }
  if (!cpu_available()) return;
  for (const char* value : {"0", ""}) {
    ScopedEnv env("BNB_LOG_LEVEL", value);
    ScopedEnv backend("BNB_BACKEND", "cpu");
    ASSERT_BNB_OK(bnb_context_create(nullptr, &ctx));
    ASSERT_BNB_OK(bnb_context_destroy(ctx));
  }
}

// BNB_CHECK_FINITE takes 0 or 1 (docs/API.md); anything else fails every context creation.
TEST(Robust, CheckFiniteVariable) {
  bnb_context_t ctx = nullptr;
  for (const char* value : {"2", "-1", "yes", "true", "on", " 1", "1 ", "01", "0x1"}) {
    ScopedEnv env("BNB_CHECK_FINITE", value);
    EXPECT_FAILS(bnb_context_create(nullptr, &ctx), BNB_ERR_INVALID_ARGUMENT,
                 std::string("BNB_CHECK_FINITE=") + value + " is not valid");
    EXPECT_TRUE(contains(bnb_last_error_message(), "use 1")) << bnb_last_error_message();
    EXPECT_TRUE(contains(bnb_last_error_message(), "or 0")) << bnb_last_error_message();
    EXPECT_EQ(ctx, nullptr);
    bnb_context_options_t opts;  // invalid even where the option would decide
    bnb_context_options_init(&opts);
    opts.check_finite = -1;
    EXPECT_FAILS(bnb_context_create(&opts, &ctx), BNB_ERR_INVALID_ARGUMENT, "BNB_CHECK_FINITE");
  }
  bnb_context_options_t opts;
  bnb_context_options_init(&opts);
  EXPECT_EQ(opts.check_finite, 0);
  for (int32_t bad : {2, -2, INT32_MAX}) {
    opts.check_finite = bad;
    EXPECT_FAILS(bnb_context_create(&opts, &ctx), BNB_ERR_INVALID_ARGUMENT, "options->check_finite");
  }
  if (!cpu_available()) return;
  // Which contexts scan: the option decides when set, else the variable (unset, "" and "0": off).
  struct Case {
    const char* env;
    int32_t option;
    bool scans;
  };
  const Case cases[] = {{nullptr, 0, false}, {"", 0, false}, {"0", 0, false}, {"1", 0, true},  {"1", -1, false},
                        {"0", 1, true},      {nullptr, 1, true}, {"1", 1, true}, {nullptr, -1, false}};
  const float values[256] = {1.0f, 2.0f, std::numeric_limits<float>::quiet_NaN()};
  uint8_t q[256];
  float absmax[1];
  for (const Case& c : cases) {
    ScopedEnv env("BNB_CHECK_FINITE", c.env);
    opts.backend = BNB_BACKEND_CPU;
    opts.check_finite = c.option;
    ASSERT_BNB_OK(bnb_context_create(&opts, &ctx));
    const bnb_status_t st = bnb_quantize_blockwise(ctx, BNB_F32, values, 256, 256, nullptr, q, absmax, nullptr);
    EXPECT_EQ(st, c.scans ? BNB_ERR_INVALID_ARGUMENT : BNB_SUCCESS) << (c.env ? c.env : "unset") << " " << c.option;
    if (c.scans) {
      EXPECT_TRUE(contains(bnb_last_error_message(), "A[2] is not finite")) << bnb_last_error_message();
    }
    ASSERT_BNB_OK(bnb_context_destroy(ctx));
  }
}

// bnb_context_options_t grew check_finite; a caller built against the first struct (which ended
// at num_threads) passes that size and gets the default for the rest ($BNB_CHECK_FINITE).
TEST(Robust, ContextOptionsOfTheFirstSizeStillWork) {
  if (!cpu_available()) GTEST_SKIP() << "cpu backend not available";
  struct FirstOptions {
    uint32_t struct_size;
    int32_t backend, device, num_threads;
  };
  static_assert(sizeof(FirstOptions) == offsetof(bnb_context_options_t, check_finite), "the first layout");
  // What follows the smaller struct in the caller's memory must not be read as check_finite.
  struct {
    FirstOptions opts;
    int32_t garbage;
  } caller = {{sizeof(FirstOptions), BNB_BACKEND_CPU, 0, 1}, 12345};
  const float values[256] = {std::numeric_limits<float>::infinity()};
  uint8_t q[256];
  float absmax[1];
  for (const char* env_value : {"0", "1"}) {
    ScopedEnv env("BNB_CHECK_FINITE", env_value);
    bnb_context_t ctx = nullptr;
    ASSERT_BNB_OK(bnb_context_create(reinterpret_cast<const bnb_context_options_t*>(&caller.opts), &ctx));
    const bnb_status_t st = bnb_quantize_blockwise(ctx, BNB_F32, values, 256, 256, nullptr, q, absmax, nullptr);
    EXPECT_EQ(st, env_value[0] == '1' ? BNB_ERR_INVALID_ARGUMENT : BNB_SUCCESS) << env_value;
    ASSERT_BNB_OK(bnb_context_destroy(ctx));
  }
  caller.opts.struct_size = sizeof(FirstOptions) - 4;
  bnb_context_t ctx = nullptr;
  EXPECT_FAILS(bnb_context_create(reinterpret_cast<const bnb_context_options_t*>(&caller.opts), &ctx),
               BNB_ERR_INVALID_ARGUMENT, "struct_size");
}

TEST(Robust, InvalidCpuTargetCapIsAnError) {
  SKIP_WITHOUT_PROBE();
  if (!cpu_available()) GTEST_SKIP() << "cpu backend not available";
  // The plugin reads the cap once when it loads: a fresh process each.
  Outcome r = run_command("BNB_BACKEND=cpu BNB_CPU_MAX_TARGET=bogus " + kProbe);
  ASSERT_TRUE(r.exited) << r.output;
  EXPECT_EQ(r.code, BNB_ERR_INVALID_ARGUMENT) << r.output;
  EXPECT_TRUE(contains(r.output, "BNB_CPU_MAX_TARGET=bogus")) << r.output;
  EXPECT_TRUE(contains(r.output, kCapNames)) << r.output;
  r = run_command(std::string("BNB_BACKEND=cpu BNB_CPU_MAX_TARGET=") + kLowCap + " " + kProbe);
  EXPECT_TRUE(r.exited && r.code == BNB_SUCCESS) << r.output;
}

TEST(Robust, LogOfAnUnsetBackendVariable) {
  SKIP_WITHOUT_PROBE();
  if (!cpu_available()) GTEST_SKIP() << "cpu backend not available";
  const Outcome r = run_command("env -u BNB_BACKEND BNB_LOG_LEVEL=2 " + kProbe);
  ASSERT_TRUE(r.exited) << r.output;
  EXPECT_TRUE(contains(r.output, "(BNB_BACKEND unset)")) << r.output;
  EXPECT_FALSE(contains(r.output, "BNB_BACKEND=)")) << r.output;
}

// ---------------------------------------------------------------- messages

TEST(Robust, NonFiniteHyperParameterIsNamed) {
  if (!cpu_available()) GTEST_SKIP() << "cpu backend not available";
  Context ctx(BNB_BACKEND_CPU);
  ASSERT_TRUE(ctx.ok()) << bnb_last_error_message();
  bnb_optimizer_tensors_t tensors;
  ASSERT_BNB_OK(bnb_optimizer_tensors_init(&tensors));
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  struct Case {
    float bnb_optimizer_params_t::*field;
    const char* name;
    float value;
  };
  const Case cases[] = {{&bnb_optimizer_params_t::beta1, "beta1", nan},
                        {&bnb_optimizer_params_t::beta2, "beta2", -inf},
                        {&bnb_optimizer_params_t::beta3, "beta3", nan},
                        {&bnb_optimizer_params_t::alpha, "alpha", inf},
                        {&bnb_optimizer_params_t::eps, "eps", inf},
                        {&bnb_optimizer_params_t::weight_decay, "weight_decay", nan},
                        {&bnb_optimizer_params_t::gnorm_scale, "gnorm_scale", inf}};
  for (const Case& c : cases) {
    bnb_optimizer_params_t params;
    ASSERT_BNB_OK(bnb_optimizer_params_init(&params));
    params.n = 256;
    params.*c.field = c.value;
    EXPECT_FAILS(bnb_optimizer_update(ctx.get(), &params, &tensors, nullptr), BNB_ERR_INVALID_ARGUMENT,
                      std::string("params->") + c.name + " = ");
    // Only the bad field: no list of candidates.
    for (const Case& other : cases) {
      if (&other == &c) continue;
      EXPECT_FALSE(contains(bnb_last_error_message(), other.name)) << bnb_last_error_message();
    }
  }
}

// ---------------------------------------------------------------- damaged and careless plugins

namespace {

// Loads a private copy of libbnb.so from `dir` (its own registry, searching `dir` first);
// `plugin` (if not empty) is copied into `dir` as `name`, truncated to `keep` bytes when
// keep >= 0. The handle, or NULL with *error set.
void* open_with_plugin(const std::string& dir, const std::string& plugin, const std::string& name, long keep,
                       std::string* error) {
  std::string cmd = "rm -rf " + dir + " && mkdir -p " + dir + " && cp " + BNB_BUILD_LIB_DIR + "/libbnb.so.0 " + dir +
                    "/libbnb.so";
  if (!plugin.empty()) {
    cmd += " && cp " + plugin + " " + dir + "/" + name;
    if (keep >= 0) cmd += " && truncate -s " + std::to_string(keep) + " " + dir + "/" + name;
  }
  if (std::system(cmd.c_str()) != 0) {
    *error = "setup failed: " + cmd;
    return nullptr;
  }
  void* h = dlopen((dir + "/libbnb.so").c_str(), RTLD_NOW | RTLD_LOCAL);
  if (h == nullptr) *error = std::string("dlopen failed: ") + dlerror();
  return h;
}

// A private libbnb.so whose hip backend is the fake plugin without find_nonfinite (one op, a step
// limit of 5); `tag` names its directory.
void* open_with_nofinite_plugin(const char* tag, std::string* error) {
  const std::string plugin = std::string(BNB_TEST_PLUGIN_DIR) + "/nofinite/libbnb_backend_hip.so";
  const std::string dir = ::testing::TempDir() + tag + std::to_string(getpid());
  return open_with_plugin(dir, plugin, "libbnb_backend_hip.so", -1, error);
}

// The bnb.h function `fn` of the library at `h`, with its own type.
#define BNB_SYMBOL(h, fn) reinterpret_cast<decltype(&fn)>(dlsym(h, #fn))

// Backend `index`'s detail as a private libbnb.so with `plugin` sees it (open_with_plugin).
std::string detail_with_plugin(const std::string& dir, const std::string& plugin, const std::string& name,
                               long keep, int32_t index, int32_t* available) {
  *available = -1;
  std::string error;
  void* h = open_with_plugin(dir, plugin, name, keep, &error);
  if (h == nullptr) return error;
  auto get_info = reinterpret_cast<bnb_status_t (*)(int32_t, bnb_backend_info_t*)>(dlsym(h, "bnb_backend_get_info"));
  bnb_backend_info_t info;
  info.struct_size = sizeof info;
  if (get_info == nullptr || get_info(index, &info) != BNB_SUCCESS) return "get_info failed";
  *available = info.available;
  return info.detail;
}

}  // namespace

TEST(Robust, TruncatedPluginIsRefusedBeforeLoading) {
  if (!build_tree_present()) GTEST_SKIP() << "build tree " << BNB_BUILD_LIB_DIR << " not present";
  const std::string plugin = std::string(BNB_BUILD_LIB_DIR) + "/libbnb_backend_cpu.so";
  std::ifstream file(plugin, std::ios::binary | std::ios::ate);
  if (!file) GTEST_SKIP() << plugin << " not built";
  const long size = static_cast<long>(file.tellg());
  struct Case {
    long keep;
    const char* reason;
  };
  // Empty, a cut ELF header, the headers without the segments (dlopen died of SIGBUS on these
  // two), half the file, all but one byte.
  const Case cases[] = {{0, "not an ELF file"},
                        {40, "not an ELF file"},
                        {4096, "truncated or damaged file"},
                        {100000, "truncated or damaged file"},
                        {size / 2, "truncated or damaged file"},
                        {size - 1, "truncated or damaged file"}};
  int n = 0;
  for (const Case& c : cases) {
    const std::string dir =
        ::testing::TempDir() + "bnb_truncated_" + std::to_string(getpid()) + "_" + std::to_string(n++);
    int32_t available = -1;
    // Named as the hip plugin so that it is the only candidate for that slot (index 2).
    const std::string detail = detail_with_plugin(dir, plugin, "libbnb_backend_hip.so", c.keep, 2, &available);
    EXPECT_EQ(available, 0) << c.keep << ": " << detail;
    EXPECT_TRUE(contains(detail, c.reason)) << "kept " << c.keep << " of " << size << " bytes: " << detail;
    EXPECT_TRUE(contains(detail, "libbnb_backend_hip.so")) << detail;
  }
  // The whole file still loads (its ops table reports the cpu kind, but the checks pass).
  const std::string dir = ::testing::TempDir() + "bnb_whole_" + std::to_string(getpid());
  int32_t available = -1;
  const std::string detail = detail_with_plugin(dir, plugin, "libbnb_backend_cpu.so", -1, 0, &available);
  EXPECT_EQ(available, 1) << detail;
}

TEST(Robust, UnterminatedPluginDescriptionIsCutAtTheBuffer) {
  if (!build_tree_present()) GTEST_SKIP() << "build tree " << BNB_BUILD_LIB_DIR << " not present";
  const std::string plugin = std::string(BNB_TEST_PLUGIN_DIR) + "/longdesc/libbnb_backend_hip.so";
  const std::string dir = ::testing::TempDir() + "bnb_longdesc_" + std::to_string(getpid());
  int32_t available = -1;
  const std::string detail = detail_with_plugin(dir, plugin, "libbnb_backend_hip.so", -1, 2, &available);
  EXPECT_EQ(available, 0) << detail;  // it scores 0
  EXPECT_EQ(detail, std::string(sizeof(bnb_backend_info_t{}.detail) - 1, 'x'));
}

// A backend without the find_nonfinite slot: contexts asking for the finite check get
// BNB_ERR_NOT_SUPPORTED naming the backend from an op that would scan; others run the op.
TEST(Robust, FiniteCheckOnABackendWithoutTheSlotIsNotSupported) {
  if (!build_tree_present()) GTEST_SKIP() << "build tree " << BNB_BUILD_LIB_DIR << " not present";
  std::string error;
  void* h = open_with_nofinite_plugin("bnb_nofinite_", &error);
  ASSERT_NE(h, nullptr) << error;
  auto create = BNB_SYMBOL(h, bnb_context_create);
  auto destroy = BNB_SYMBOL(h, bnb_context_destroy);
  auto quantize = BNB_SYMBOL(h, bnb_quantize_blockwise);
  auto message = BNB_SYMBOL(h, bnb_last_error_message);
  ASSERT_TRUE(create && destroy && quantize && message);
  const float values[256] = {1.0f};
  float absmax[1];
  for (int32_t check : {1, -1}) {
    uint8_t q[256] = {};
    bnb_context_options_t opts;
    bnb_context_options_init(&opts);
    opts.backend = BNB_BACKEND_HIP;
    opts.check_finite = check;
    bnb_context_t ctx = nullptr;
    ASSERT_EQ(create(&opts, &ctx), BNB_SUCCESS) << message();
    const bnb_status_t st = quantize(ctx, BNB_F32, values, 256, 256, nullptr, q, absmax, nullptr);
    if (check == 1) {
      EXPECT_EQ(st, BNB_ERR_NOT_SUPPORTED);
      EXPECT_TRUE(contains(message(), "not supported by the hip backend")) << message();
      EXPECT_TRUE(contains(message(), "check_finite")) << message();
      EXPECT_EQ(q[0], 0);  // the op did not run
    } else {
      EXPECT_EQ(st, BNB_SUCCESS) << message();
      EXPECT_EQ(q[0], 0x42);
    }
    destroy(ctx);
  }
}

// The capabilities of a plugin with one op come from its table: one op bit, no 4-bit types or
// optimizers, and its own step limit, which the core applies before it looks for the op.
TEST(Robust, CapabilitiesFollowThePluginTable) {
  if (!build_tree_present()) GTEST_SKIP() << "build tree " << BNB_BUILD_LIB_DIR << " not present";
  std::string error;
  void* h = open_with_nofinite_plugin("bnb_caps_", &error);
  ASSERT_NE(h, nullptr) << error;
  auto get_caps = BNB_SYMBOL(h, bnb_backend_get_capabilities);
  auto create = BNB_SYMBOL(h, bnb_context_create);
  auto destroy = BNB_SYMBOL(h, bnb_context_destroy);
  auto update = BNB_SYMBOL(h, bnb_optimizer_update);
  auto message = BNB_SYMBOL(h, bnb_last_error_message);
  ASSERT_TRUE(get_caps && create && destroy && update && message);
  bnb_backend_capabilities_t caps;
  caps.struct_size = sizeof caps;
  ASSERT_EQ(get_caps(BNB_BACKEND_HIP - 1, &caps), BNB_SUCCESS) << message();
  EXPECT_EQ(caps.kind, BNB_BACKEND_HIP);
  EXPECT_EQ(caps.ops, uint64_t{1} << BNB_OP_QUANTIZE_BLOCKWISE);
  EXPECT_EQ(caps.quant_types, 0u);
  EXPECT_EQ(caps.optimizers, 0u);
  EXPECT_EQ(caps.optimizer_state_bits, 0u);
  EXPECT_EQ(caps.optimizer_max_step, 5);

  bnb_context_options_t opts;
  bnb_context_options_init(&opts);
  opts.backend = BNB_BACKEND_HIP;
  bnb_context_t ctx = nullptr;
  ASSERT_EQ(create(&opts, &ctx), BNB_SUCCESS) << message();
  std::vector<float> p(16), g(16), s1(16), s2(16);
  bnb_optimizer_params_t params;
  bnb_optimizer_params_init(&params);
  params.n = 16;
  bnb_optimizer_tensors_t t;
  bnb_optimizer_tensors_init(&t);
  t.p = p.data();
  t.g = g.data();
  t.state1 = s1.data();
  t.state2 = s2.data();
  params.step = 6;
  EXPECT_EQ(update(ctx, &params, &t, nullptr), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_TRUE(contains(message(), "params->step = 6 is beyond the hip backend's largest step 5")) << message();
  params.step = 5;
  EXPECT_EQ(update(ctx, &params, &t, nullptr), BNB_ERR_NOT_SUPPORTED);
  EXPECT_TRUE(contains(message(), "bnb_optimizer_update is not supported by the hip backend")) << message();
  destroy(ctx);
}

// Arrays must be aligned to their element size (docs/API.md, "Arrays"); the kernels access them
// through typed pointers, so the core refuses a misaligned one and names it instead of letting a
// kernel load misaligned floats (undefined behaviour, reported by UBSan before this check).
TEST(Robust, MisalignedArraysAreRefusedByName) {
  if (!cpu_available()) GTEST_SKIP() << "cpu backend not available";
  Context ctx(BNB_BACKEND_CPU, 1);
  ASSERT_TRUE(ctx.ok());
  const int64_t n = 256;
  alignas(16) unsigned char raw[4 * 256 + 64] = {};
  unsigned char* odd = raw + 1;  // aligned to nothing wider than a byte
  std::vector<uint8_t> q(n);
  std::vector<float> absmax(4), floats(n + 8);
  auto expect_named = [](bnb_status_t s, const char* name) {
    EXPECT_EQ(s, BNB_ERR_INVALID_ARGUMENT);
    const std::string m = bnb_last_error_message();
    EXPECT_NE(m.find(name), std::string::npos) << m;
    EXPECT_NE(m.find("aligned"), std::string::npos) << m;
  };
  // A float32 input one byte off.
  expect_named(bnb_quantize_blockwise(ctx.get(), BNB_F32, odd, n, 64, nullptr, q.data(), absmax.data(), nullptr),
               "A");
  // An fp16 output at an odd address; a float output at 2 mod 4 (aligned for fp16, not float).
  expect_named(bnb_dequantize_blockwise(ctx.get(), q.data(), absmax.data(), nullptr, n, 64, BNB_F16, odd, nullptr),
               "out");
  expect_named(bnb_dequantize_blockwise(ctx.get(), q.data(), absmax.data(), nullptr, n, 64, BNB_F32, raw + 2,
                                        nullptr),
               "out");
  // The same address is fine for fp16.
  EXPECT_EQ(bnb_dequantize_blockwise(ctx.get(), q.data(), absmax.data(), nullptr, n, 64, BNB_F16, raw + 2, nullptr),
            BNB_SUCCESS)
      << bnb_last_error_message();
  // Typed arrays: a float* absmax one byte off.
  expect_named(bnb_quantize_4bit(ctx.get(), BNB_NF4, BNB_F32, floats.data(), n, 64, q.data(),
                                 reinterpret_cast<float*>(odd), nullptr),
               "absmax");
  // Optimizer tensors: p of float32 two bytes off.
  bnb_optimizer_params_t p;
  bnb_optimizer_params_init(&p);
  p.optimizer = BNB_OPT_ADAM;
  p.state_bits = 32;
  p.param_dtype = BNB_F32;
  p.n = 64;
  p.lr = 1e-3f;
  p.beta1 = 0.9f;
  p.beta2 = 0.999f;
  p.eps = 1e-8f;
  p.step = 1;
  std::vector<float> g(64), s1(64), s2(64);
  bnb_optimizer_tensors_t t;
  bnb_optimizer_tensors_init(&t);
  t.p = raw + 2;
  t.g = g.data();
  t.state1 = s1.data();
  t.state2 = s2.data();
  expect_named(bnb_optimizer_update(ctx.get(), &p, &t, nullptr), "p");
}
