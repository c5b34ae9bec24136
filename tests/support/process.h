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

inline bool contains(const std::string& text, const std::string& needle) {
  return text.find(needle) != std::string::npos;
}

}  // namespace bnb_test

#endif  // BNB_TESTS_PROCESS_H_
