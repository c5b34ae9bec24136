/* bnb_status_string called from C, the way C callers reach it: in C any int converts to bnb_status_t,
   so tests/unit/test_robust.cc can pass values outside the enum without calling the function
   through a pointer of another type (undefined in C++; clang's UBSan reports it). */
#include <stdint.h>

#include "bnb.h"

const char* bnb_test_status_string_from_c(int32_t status) { return bnb_status_string((bnb_status_t)status); }
