// Placeholder: the optim family of the CPU backend registers its ops here (none yet).
#include "plugin.h"

namespace bnb {
namespace cpu {

void register_optim_ops(bnb_backend_ops_t* /*ops*/) {}

}  // namespace cpu
}  // namespace bnb
