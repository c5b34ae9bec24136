// Shared by the optimizer suites (tests/unit/test_optim*.cc, tests/gpu/test_optim*.cc): one
// parameter tensor with its optimizer state in a backend's memory, stepped with
// bnb_optimizer_update, plus host-side helpers. Header-only so both test programs can use it.
#ifndef BNB_TESTS_UNIT_OPTIM_TEST_UTIL_H_
#define BNB_TESTS_UNIT_OPTIM_TEST_UTIL_H_

#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bnb.h"
#include "int_math.h"
#include "util.h"

namespace bnb_test {

inline bool optim_two_states(int32_t opt) {
  return opt == BNB_OPT_ADAM || opt == BNB_OPT_LAMB || opt == BNB_OPT_ADEMAMIX;
}

inline const char* optim_name(int32_t opt) {
  switch (opt) {
    case BNB_OPT_ADAM: return "adam";
    case BNB_OPT_MOMENTUM: return "momentum";
    case BNB_OPT_RMSPROP: return "rmsprop";
    case BNB_OPT_LION: return "lion";
    case BNB_OPT_ADAGRAD: return "adagrad";
    case BNB_OPT_ADEMAMIX: return "ademamix";
    case BNB_OPT_LAMB: return "lamb";
    case BNB_OPT_LARS: return "lars";
    default: return "?";
  }
}

// A parameter tensor and its state (docs/FORMATS.md §5.6 layout) in the memory of `ctx`'s backend.
// A fresh state is zero, as the reference allocates it.
class OptimTensor {
 public:
  OptimTensor(const Context& ctx, int32_t opt, int32_t bits, int32_t dtype, int64_t n)
      : ctx_(ctx), opt_(opt), bits_(bits), dtype_(dtype), n_(n) {
    const size_t es = dtype_size(dtype);
    const int64_t copies = opt == BNB_OPT_ADEMAMIX ? 2 : 1;  // AdEMAMix: m1 and m2 in state1
    const int64_t nblocks = bnb::ceil_div(n, 256);
    p_ = std::make_unique<Buffer>(ctx, static_cast<size_t>(n) * es);
    g_ = std::make_unique<Buffer>(ctx, static_cast<size_t>(n) * es);
    const size_t state_es = bits == 8 ? 1 : 4;
    s1_ = std::make_unique<Buffer>(ctx, static_cast<size_t>(n * copies) * state_es);
    s1_->fill(0);
    if (optim_two_states(opt)) {
      s2_ = std::make_unique<Buffer>(ctx, static_cast<size_t>(n) * state_es);
      s2_->fill(0);
    }
    if (bits == 8) {
      a1_ = std::make_unique<Buffer>(ctx, static_cast<size_t>(nblocks * copies) * 4);
      a1_->fill(0);
      if (optim_two_states(opt)) {
        a2_ = std::make_unique<Buffer>(ctx, static_cast<size_t>(nblocks) * 4);
        a2_->fill(0);
      }
    }
    unorm_ = std::make_unique<Buffer>(ctx, 4);
    unorm_->fill(0);
  }

  void set_p(const std::vector<float>& values) { upload(*p_, to_dtype(values, dtype_)); }
  void set_p_bytes(const std::vector<uint8_t>& bytes) { upload(*p_, bytes); }
  std::vector<float> p() const { return from_dtype(p_->download(), dtype_); }
  std::vector<uint8_t> p_bytes() const { return p_->download(); }
  std::vector<float> state1_f32() const { return s1_->download_as<float>(); }
  std::vector<float> state2_f32() const { return s2_->download_as<float>(); }
  std::vector<uint8_t> state1_codes() const { return s1_->download(); }
  std::vector<uint8_t> state2_codes() const { return s2_->download(); }
  std::vector<float> absmax1() const { return a1_->download_as<float>(); }
  std::vector<float> absmax2() const { return a2_->download_as<float>(); }
  float unorm() const { return unorm_->download_as<float>()[0]; }
  void set_state1_codes(const std::vector<uint8_t>& c) { upload(*s1_, c); }
  void set_state2_codes(const std::vector<uint8_t>& c) { upload(*s2_, c); }
  void set_absmax1(const std::vector<float>& a) { upload(*a1_, a); }
  void set_absmax2(const std::vector<float>& a) { upload(*a2_, a); }
  void set_state1_f32(const std::vector<float>& s) { upload(*s1_, s); }
  void set_state2_f32(const std::vector<float>& s) { upload(*s2_, s); }

  // One step with gradient `g` (given in the parameter dtype's bytes); params.n/optimizer/
  // state_bits/param_dtype are filled in here.
  bnb_status_t step_bytes(bnb_optimizer_params_t params, const std::vector<uint8_t>& g) {
    params.optimizer = opt_;
    params.state_bits = bits_;
    params.param_dtype = dtype_;
    params.n = n_;
    bnb_optimizer_tensors_t t = prepare_bytes(g);
    t.unorm_vec = unorm_->as<float>();
    const bnb_status_t st = bnb_optimizer_update(ctx_.get(), &params, &t, nullptr);
    if (st != BNB_SUCCESS) return st;
    return bnb_synchronize(ctx_.get(), nullptr);
  }
  bnb_status_t step(const bnb_optimizer_params_t& params, const std::vector<float>& g) {
    return step_bytes(params, to_dtype(g, dtype_));
  }

  // Uploads the gradient (float values, or the dtype's bytes) and returns this tensor's pointers
  // (no unorm_vec), as bnb_optimizer_update and bnb_optimizer_update_multi take them.
  bnb_optimizer_tensors_t prepare(const std::vector<float>& g) { return prepare_bytes(to_dtype(g, dtype_)); }
  bnb_optimizer_tensors_t prepare_bytes(const std::vector<uint8_t>& g) {
    upload(*g_, g);
    bnb_optimizer_tensors_t t;
    bnb_optimizer_tensors_init(&t);
    t.p = p_->get();
    t.g = g_->get();
    t.state1 = s1_->get();
    t.state2 = s2_ ? s2_->get() : nullptr;
    t.absmax1 = a1_ ? a1_->as<float>() : nullptr;
    t.absmax2 = a2_ ? a2_->as<float>() : nullptr;
    return t;
  }

  int64_t n() const { return n_; }
  int32_t dtype() const { return dtype_; }

 private:
  template <class V>
  static void upload(Buffer& b, const V& host) {
    b.upload(host.data(), host.size() * sizeof(host[0]));
  }
  const Context& ctx_;
  int32_t opt_, bits_, dtype_;
  int64_t n_;
  std::unique_ptr<Buffer> p_, g_, s1_, s2_, a1_, a2_, unorm_;
};

// Default hyper-parameters of the reference classes (docs/OPS.md §6.2) for `opt`.
inline bnb_optimizer_params_t default_optim_params(int32_t opt) {
  bnb_optimizer_params_t p;
  bnb_optimizer_params_init(&p);
  p.optimizer = opt;
  switch (opt) {
    case BNB_OPT_ADAM: break;
    case BNB_OPT_LAMB: p.weight_decay = 0.0f; p.max_unorm = 1.0f; break;
    case BNB_OPT_MOMENTUM: p.lr = 0.01f; p.beta1 = 0.9f; p.eps = 0.0f; break;
    case BNB_OPT_LARS: p.lr = 0.01f; p.beta1 = 0.9f; p.eps = 0.0f; p.max_unorm = 0.02f; break;
    case BNB_OPT_RMSPROP: p.lr = 0.01f; p.beta1 = 0.99f; p.eps = 1e-8f; break;
    case BNB_OPT_ADAGRAD: p.lr = 0.01f; p.beta1 = 0.0f; p.beta2 = 0.0f; p.eps = 1e-10f; break;
    case BNB_OPT_LION: p.lr = 1e-4f; p.beta1 = 0.9f; p.beta2 = 0.99f; p.eps = 0.0f; break;
    case BNB_OPT_ADEMAMIX: p.weight_decay = 0.01f; break;
    default: break;
  }
  return p;
}

// L2 norm of host values, as the Python layer passes param_norm for LAMB/LARS.
inline float l2_norm(const std::vector<float>& v) {
  double s = 0.0;
  for (float x : v) s += static_cast<double>(x) * x;
  return static_cast<float>(std::sqrt(s));
}

}  // namespace bnb_test

#endif  // BNB_TESTS_UNIT_OPTIM_TEST_UTIL_H_
