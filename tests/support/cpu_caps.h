// The CPU plugin's BNB_CPU_MAX_TARGET names as the tests of the cap expect them on the
// architecture being built (the plugin accepts only those of targets compiled into it).
#ifndef BNB_TESTS_CPU_CAPS_H_
#define BNB_TESTS_CPU_CAPS_H_

namespace bnb_test {

#if defined(__aarch64__)
// NEON: every aarch64 CPU has it.
constexpr const char* kLowCap = "neon";
constexpr const char* kLowTarget = "NEON";  // Highway's name, as `bnb info` prints it
constexpr const char* kCapNames = "sve2_128, sve_256, sve2, sve or neon";
#else
// SSE4: every x86-64 CPU the plugin supports has it.
constexpr const char* kLowCap = "sse4";
constexpr const char* kLowTarget = "SSE4";
constexpr const char* kCapNames = "avx3_dl, avx3, avx2, sse4, emu128 or scalar";
#endif

}  // namespace bnb_test

#endif  // BNB_TESTS_CPU_CAPS_H_
