// Runs a shell command and collects what it printed and how it ended, for tests of programs and
// of what a fresh process does (the environment a library reads once, resource limits).
#ifndef BNB_TESTS_PROCESS_H_
#define BNB_TESTS_PROCESS_H_

#include <sys/wait.h>

#include <cstdio>
#include <string>

namespace bnb_test {

struct Outcome {
  std::string output;   // stdout and stderr together
  bool exited = false;  // ended by exit(), not by a signal
  int code = -1;        // exit status when exited
};

inline Outcome run_command(const std::string& command) {
  Outcome r;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof buf, pipe)) > 0) r.output.append(buf, got);
  const int status = pclose(pipe);
  r.exited = status != -1 && WIFEXITED(status);
  r.code = r.exited ? WEXITSTATUS(status) : -1;
  return r;
}

// A command that runs one of the build's programs. A cross build's tests run under an emulator
// (CMAKE_CROSSCOMPILING_EMULATOR, e.g. qemu-aarch64), and so must the programs they start:
// BNB_TEST_EMULATOR is its command line with a space after it.
inline std::string program(const char* path) {
#ifdef BNB_TEST_EMULATOR
  return std::string(BNB_TEST_EMULATOR) + path;
#else
  return path;
#endif
}

inline bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

}  // namespace bnb_test

#endif  // BNB_TESTS_PROCESS_H_
