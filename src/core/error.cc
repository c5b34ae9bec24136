#include "error.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <new>

namespace bnb {
namespace {

thread_local std::string t_last_error;

std::string vformat(const char* format, va_list args) {
  char buf[512];
  va_list copy;
  va_copy(copy, args);
  const int len = std::vsnprintf(buf, sizeof buf, format, copy);
  va_end(copy);
  if (len < 0) return format;
  if (static_cast<size_t>(len) < sizeof buf) return std::string(buf, static_cast<size_t>(len));
  std::string out(static_cast<size_t>(len) + 1, '\0');
  std::vsnprintf(&out[0], out.size(), format, args);
  out.resize(static_cast<size_t>(len));
  return out;
}

}  // namespace

bnb_status_t fail(bnb_status_t status, const std::string& message) {
  try {
    t_last_error = message;
  } catch (...) {
    // Out of memory while recording the message: keep the status, lose the detail.
  }
  log(3, std::string("error: ") + message);
  return status;
}

bnb_status_t failf(bnb_status_t status, const char* format, ...) {
  va_list args;
  va_start(args, format);
  std::string message = vformat(format, args);
  va_end(args);
  return fail(status, message);
}

const char* last_error() { return t_last_error.c_str(); }

bool parse_log_level(const char* text, int* level) {
  *level = 0;
  if (text == nullptr || *text == '\0') return true;
  if (text[0] < '0' || text[0] > '3' || text[1] != '\0') return false;
  *level = text[0] - '0';
  return true;
}

int log_level() {
  // An invalid value logs nothing here; bnb_context_create reports it.
  static const int level = [] {
    int v = 0;
    return parse_log_level(std::getenv("BNB_LOG_LEVEL"), &v) ? v : 0;
  }();
  return level;
}

void log(int level, const std::string& message) {
  if (level > log_level()) return;
  std::fprintf(stderr, "[bnb] %s\n", message.c_str());
}

void logf(int level, const char* format, ...) {
  if (level > log_level()) return;
  va_list args;
  va_start(args, format);
  std::string message = vformat(format, args);
  va_end(args);
  log(level, message);
}

}  // namespace bnb
