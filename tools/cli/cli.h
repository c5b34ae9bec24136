#ifndef BNB_TOOLS_CLI_H_
#define BNB_TOOLS_CLI_H_

#include <string>
#include <vector>

int run_bench(const std::vector<std::string>& args);
// `bnb inspect` and `bnb quantize` (convert.cc).
int run_inspect(const std::vector<std::string>& args);
int run_quantize(const std::vector<std::string>& args);

#endif  // BNB_TOOLS_CLI_H_
