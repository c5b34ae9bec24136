// The `bnb` program: usage errors are exit 2 with a message that names the argument and its
// choices; --help and --version; sizes too small to time are refused; the environment is checked
// as bnb_context_create checks it.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include "bnb.h"
#include "cpu_caps.h"
#include "process.h"

using namespace bnb_test;

namespace {

#ifdef BNB_CLI_PATH
const char* const kCli = BNB_CLI_PATH;
#else
const char* const kCli = nullptr;
#endif

class Cli : public ::testing::Test {
 protected:
  void SetUp() override {
    if (kCli == nullptr) GTEST_SKIP() << "the bnb program is not built (BNB_BUILD_TOOLS=OFF)";
    if (access(kCli, X_OK) != 0) GTEST_SKIP() << kCli << " not present (binaries carried to another machine)";
  }
  // Runs `bnb <args>` with `env` (VAR=value ...) in front and BNB_BACKEND cleared.
  static Outcome bnb(const std::string& args, const std::string& env = "") {
    return run_command("env -u BNB_BACKEND -u BNB_NUM_THREADS -u BNB_LOG_LEVEL " + env + " " + program(kCli) + " " + args);
  }
};

#define EXPECT_USAGE_ERROR(args, needle)                                                \
  do {                                                                                  \
    const Outcome r_ = bnb(args);                                                       \
    EXPECT_TRUE(r_.exited) << "bnb " << args;                                           \
    EXPECT_EQ(r_.code, 2) << "bnb " << args << ":\n" << r_.output;                      \
    EXPECT_TRUE(contains(r_.output, needle)) << "bnb " << args << ":\n" << r_.output;   \
    EXPECT_FALSE(contains(r_.output, "GB/s")) << "bnb " << args << " ran the benchmark"; \
  } while (0)

}  // namespace

TEST_F(Cli, HelpAndVersion) {
  Outcome r = bnb("--help");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "usage: bnb info")) << r.output;
  EXPECT_TRUE(contains(r.output, "bnb bench")) << r.output;
  r = bnb("--version");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_EQ(r.output, std::string("bnb ") + bnb_version_string() + "\n");
  r = bnb("bench --help");
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "--n        elements per tensor, 1048576")) << r.output;
  r = bnb("");
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "usage:")) << r.output;
}

TEST_F(Cli, UsageErrorsNameTheArgument) {
  EXPECT_USAGE_ERROR("frobnicate", "unknown command 'frobnicate'");
  EXPECT_USAGE_ERROR("info --verbose", "info takes no arguments");
  EXPECT_USAGE_ERROR("bench --bogus", "unknown argument '--bogus'");
  EXPECT_USAGE_ERROR("bench --n", "--n needs a value");
  EXPECT_USAGE_ERROR("bench --n abc", "--n 'abc' is not a whole number");
  EXPECT_USAGE_ERROR("bench --n 12abc", "--n '12abc' is not a whole number");
  EXPECT_USAGE_ERROR("bench --n -5", "--n -5 is too small to time: use at least 1048576 elements");
  EXPECT_USAGE_ERROR("bench --n 0", "too small to time");
  EXPECT_USAGE_ERROR("bench --n 1000", "--n 1000 is too small to time: use at least 1048576 elements");
  EXPECT_USAGE_ERROR("bench --n=99999999999999", "too large");
  EXPECT_USAGE_ERROR("bench --backend bogus", "--backend 'bogus' is not one of auto, cpu, cuda, hip");
  EXPECT_USAGE_ERROR("bench --backend CPU", "is not one of auto, cpu, cuda, hip");
  EXPECT_USAGE_ERROR("bench --dtype f64", "--dtype 'f64' is not one of f32, f16, bf16, all");
  EXPECT_USAGE_ERROR("bench --threads -1", "--threads '-1' is not valid: use 0 (default) or a number of threads");
  EXPECT_USAGE_ERROR("bench --reps 0", "--reps '0' is not valid: use 1 to 100000");
  EXPECT_USAGE_ERROR("bench --json", "--json needs a value");
}

TEST_F(Cli, InvalidEnvironmentIsReported) {
  Outcome r = bnb("info", "BNB_NUM_THREADS=abc");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "BNB_NUM_THREADS=abc is not valid: use a whole number from 1 to 4096")) << r.output;
  r = bnb("bench --n 1048576 --reps 1", "BNB_BACKEND=bogus");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "BNB_BACKEND=bogus is not valid: use auto, cpu, cuda or hip")) << r.output;
  EXPECT_FALSE(contains(r.output, "GB/s")) << r.output;
  // The library's thread cap, as bnb_context_create words it.
  r = bnb("bench --n 1048576 --threads 5000");
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "num_threads 5000 is not valid: use 0 (default) to 4096")) << r.output;
  EXPECT_FALSE(contains(r.output, "GB/s")) << r.output;
}

TEST_F(Cli, SmallestBenchmarkRuns) {
#ifdef BNB_TEST_EMULATOR
  // Under qemu at the lowest target: emulated SVE quantizes 4-bit at about 0.01 GB/s, which a
  // loaded machine prints as 0.00.
  const std::string env = std::string("BNB_CPU_MAX_TARGET=") + kLowCap;
#else
  const std::string env;
#endif
  const Outcome r = bnb("bench --backend=cpu --n 1048576 --reps 1 --threads 1", env);
  if (contains(r.output, "BNB_ERR_BACKEND_UNAVAILABLE")) GTEST_SKIP() << "cpu backend not available";
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "n = 1048576, threads = 1")) << r.output;
  EXPECT_TRUE(contains(r.output, "quantize_blockwise")) << r.output;
  EXPECT_FALSE(contains(r.output, " 0.00 GB/s")) << r.output;
}

// `bnb info` names the SIMD target the CPU plugin chose and every target compiled in, the chosen
// one among them, also when BNB_CPU_MAX_TARGET caps it.
TEST_F(Cli, InfoListsTheCompiledSimdTargets) {
  for (const std::string& env : {std::string(), std::string("BNB_CPU_MAX_TARGET=") + kLowCap}) {
    const Outcome r = bnb("info", env);
    ASSERT_EQ(r.code, 0) << r.output;
    const size_t s = r.output.find("simd: "), c = r.output.find("; compiled: ");
    ASSERT_NE(s, std::string::npos) << r.output;
    ASSERT_NE(c, std::string::npos) << r.output;
    const std::string chosen = r.output.substr(s + 6, r.output.find_first_of(" ;", s + 6) - (s + 6));
    const std::string compiled = r.output.substr(c + 12, r.output.find(';', c + 12) - (c + 12)) + " ";
    EXPECT_NE(compiled.find(chosen + " "), std::string::npos) << chosen << " not in " << compiled;
    EXPECT_TRUE(contains(compiled, std::string(kLowTarget) + " ")) << compiled;
    if (!env.empty()) {
      EXPECT_EQ(chosen, kLowTarget) << r.output;
    }
  }
}
