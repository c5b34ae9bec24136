// Errors and logging of the core: the calling thread's last message, status names, BNB_LOG_LEVEL.
#ifndef BNB_CORE_ERROR_H_
#define BNB_CORE_ERROR_H_

#include <string>

#include "bnb.h"

namespace bnb {

// Records `message` as this thread's last error and returns `status`.
bnb_status_t fail(bnb_status_t status, const std::string& message);
// printf-style convenience for the common case of an invalid argument.
bnb_status_t failf(bnb_status_t status, const char* format, ...) __attribute__((format(printf, 2, 3)));
const char* last_error();

// Log levels: 1 error, 2 info, 3 debug. Reads BNB_LOG_LEVEL once.
int log_level();
// A BNB_LOG_LEVEL value: NULL or "" = 0, else one digit 0..3; false (level 0) for anything else.
bool parse_log_level(const char* text, int* level);
void log(int level, const std::string& message);
void logf(int level, const char* format, ...) __attribute__((format(printf, 2, 3)));

}  // namespace bnb

// Every public entry point runs its body inside this guard so no exception crosses the C boundary.
#define BNB_API_GUARD_BEGIN try {
#define BNB_API_GUARD_END                                                         \
  }                                                                               \
  catch (const std::bad_alloc&) {                                                 \
    return ::bnb::fail(BNB_ERR_OUT_OF_MEMORY, "out of host memory");              \
  }                                                                               \
  catch (const std::exception& e) {                                               \
    return ::bnb::fail(BNB_ERR_INTERNAL, std::string("internal error: ") + e.what()); \
  }                                                                               \
  catch (...) {                                                                   \
    return ::bnb::fail(BNB_ERR_INTERNAL, "internal error: unknown exception");    \
  }

#endif  // BNB_CORE_ERROR_H_
