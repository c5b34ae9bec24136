"""The optimizers' traits as src/common/optim_traits.h (the library's one table) lists them; this
module needs no torch. tests/python/test_optim_traits.py fails when the two disagree.

    kernel           the optimizer whose update rule runs (LAMB runs Adam's, LARS Momentum's)
    states           2: state2 (and absmax2 when 8-bit) exists; 1: it does not
    state1_copies    tensors stacked in state1 (AdEMAMix: the fast and the slow EMA)
    bias_correction  beta1 and beta2 must be < 1
    clipping         update-norm clipping (max_unorm > 0) is defined
    beta3_alpha      beta3 and alpha enter the rule
"""

import collections

Traits = collections.namedtuple("Traits", "name kernel states state1_copies bias_correction clipping beta3_alpha")

# bnb_optimizer_t
ADAM, MOMENTUM, RMSPROP, LION, ADAGRAD, ADEMAMIX, LAMB, LARS = range(1, 9)

TRAITS = {
    ADAM: Traits("adam", ADAM, 2, 1, True, True, False),
    MOMENTUM: Traits("momentum", MOMENTUM, 1, 1, False, True, False),
    RMSPROP: Traits("rmsprop", RMSPROP, 1, 1, False, True, False),
    LION: Traits("lion", LION, 1, 1, False, False, False),
    ADAGRAD: Traits("adagrad", ADAGRAD, 1, 1, False, True, False),
    ADEMAMIX: Traits("ademamix", ADEMAMIX, 2, 2, True, False, True),
    LAMB: Traits("lamb", ADAM, 2, 1, True, True, False),
    LARS: Traits("lars", MOMENTUM, 1, 1, False, True, False),
}
