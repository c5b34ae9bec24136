// bnb_optimizer_update against independent scalar references on random data:
//  * 32-bit: the docs/OPS.md §6.3/6.4 rules in float64, the parameter rounded to its dtype where the rules
//    say so. Bounds: fp32 p within 2.5e-7 relative + 1e-5 lr (a few ulps; float32 states cancel), fp16/bf16 p within one
//    ulp of the dtype, states 1e-5 relative + 1e-6 of the state's largest value.
//  * 8-bit: the docs/OPS.md §6.5 rules in binary32 with the contractions of docs/OPS.md §6.1 (std::fma), exact RCP
//    and the reference code search (tests/ref). Codes identical except adjacent codes at a
//    boundary (<= 0.5 %, from targets without FMA); p as above.
// GPU backends (CUDA/HIP) evaluate with the reference's fast-math POW/RCP/SQRT (docs/OPS.md §6.1), so there
// the fp32 p bound also allows kGpuUpdateRel of the update and unorm_vec kGpuUnormRel (see
// gpu_update_rel); the CPU backend keeps the bounds above.
// Plus non-finite gradients, skip_zeros, the clipping pre-pass and bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "half.h"
#include "int_math.h"
#include "optim_test_util.h"
#include "tables.h"
#include "util.h"
#if BNB_HAVE_REF
#include "rcp.h"
#include "ref.h"
#endif

using namespace bnb_test;

namespace {

constexpr int32_t kAllOptims[] = {BNB_OPT_ADAM,    BNB_OPT_MOMENTUM, BNB_OPT_RMSPROP, BNB_OPT_LION,
                                  BNB_OPT_ADAGRAD, BNB_OPT_ADEMAMIX, BNB_OPT_LAMB,    BNB_OPT_LARS};

float round_to(int32_t dtype, double v) {
  const float f = static_cast<float>(v);
  if (dtype == BNB_F16) return bnb::f16_to_f32(bnb::f32_to_f16(f));
  if (dtype == BNB_BF16) return bnb::bf16_to_f32(bnb::f32_to_bf16(f));
  return f;
}

// One ulp of `dtype` at the magnitude of v.
double ulp_of(int32_t dtype, double v) {
  const int mant = dtype == BNB_F32 ? 23 : dtype == BNB_F16 ? 10 : 7;
  // Below fp16's smallest normal 2^-14 the ulp stays 2^-24 (6.1e-5 itself is just under 2^-14).
  const double a = std::max(std::fabs(v), dtype == BNB_F16 ? 6.103515625e-5 : 1e-30);
  return std::ldexp(1.0, std::ilogb(a) - mant);
}

// The GPU kernels compute beta^t as the reference's POW, measured up to 3 ulps above RN32(beta^t)
// for t <= 3 (docs/OPS.md §6.1). 1 - beta2^t cancels: one ulp of POW(0.999, 1) (6e-8) moves 1 - beta2^t by
// 6e-5 relative and c2 = sqrt(1 - beta2^t) by 3e-5, and the Adam/LAMB/AdEMAMix step scales with
// c2 (AdEMAMix: with its reciprocal); div.approx/SQRT/RCP add a few ulps. So on a GPU backend the
// fp32 p may differ from the exact-math reference by a few 1e-5 of the update (|p_new - p_old|),
// and the clipping sum of squares (u ~ 1/sqrt(v / (1 - beta2^t))) by 2 x 3 ulps x 3e-5 = 1.8e-4.
// Bounds: 1e-4 of the update (about three ulps of POW at t = 1) and 3e-4 of unorm_vec. Zero on
// the CPU backend, which computes beta^t exactly.
double gpu_update_rel(int32_t backend) {
  return backend == BNB_BACKEND_CUDA || backend == BNB_BACKEND_HIP ? 1e-4 : 0.0;
}
double unorm_rel(int32_t backend) {
  return backend == BNB_BACKEND_CUDA || backend == BNB_BACKEND_HIP ? 3e-4 : 1e-4;
}

bool clipped(int32_t opt, const bnb_optimizer_params_t& P) {
  return P.max_unorm > 0.0f && opt != BNB_OPT_LION && opt != BNB_OPT_ADEMAMIX;
}

// ------------------------------------------------------------------ 32-bit reference (float64)

struct Ref32 {
  std::vector<double> s1, s1b, s2;
  float unorm = 0.0f;
};

void ref32_step(int32_t opt, int32_t dtype, const bnb_optimizer_params_t& P, std::vector<float>& p,
                const std::vector<float>& g, Ref32& st) {
  const int64_t n = static_cast<int64_t>(p.size());
  const double b1 = P.beta1, b2 = P.beta2, b3 = P.beta3, lr = P.lr, eps = P.eps, wd = P.weight_decay;
  const double t = static_cast<double>(P.step);
  const double c1 = 1.0 - std::pow(b1, t), bias2 = 1.0 - std::pow(b2, t), c2 = std::sqrt(bias2);
  const bool adam = opt == BNB_OPT_ADAM || opt == BNB_OPT_LAMB;
  const bool mom = opt == BNB_OPT_MOMENTUM || opt == BNB_OPT_LARS;
  auto gprime = [&](int64_t i) { return static_cast<double>(round_to(dtype, static_cast<double>(g[i]) * P.gnorm_scale)); };
  double us = 1.0;
  if (clipped(opt, P)) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      const double gp = gprime(i);
      double u;
      if (adam) {
        const double m = st.s1[i] * b1 + (1 - b1) * gp, v = st.s2[i] * b2 + (1 - b2) * gp * gp;
        u = (m / c1) / (std::sqrt(v / bias2) + eps);
      } else if (mom) {
        u = P.step == 1 ? gp : st.s1[i] * b1 + gp;
      } else {
        const double s = opt == BNB_OPT_RMSPROP ? st.s1[i] * b1 + (1 - b1) * gp * gp : st.s1[i] + gp * gp;
        u = gp / (std::sqrt(s) + eps);
      }
      sum += u * u;
    }
    st.unorm = static_cast<float>(sum);
    const double limit = static_cast<double>(P.max_unorm) * P.param_norm + (adam ? 0.0 : eps);
    const double U = std::sqrt(sum);
    us = U > limit ? limit / U : 1.0;
  }
  for (int64_t i = 0; i < n; ++i) {
    double gp = gprime(i);
    const double p0 = p[i];
    if (adam) {
      if (P.skip_zeros && gp == 0.0) continue;
      st.s1[i] = st.s1[i] * b1 + (1 - b1) * gp;
      st.s2[i] = st.s2[i] * b2 + (1 - b2) * gp * gp;
      double pn = round_to(dtype, p0 + us * (-lr * c2 / c1) * (st.s1[i] / (std::sqrt(st.s2[i]) + eps * c2)));
      if (wd > 0) pn = round_to(dtype, pn * (1 - lr * wd));
      p[i] = static_cast<float>(pn);
    } else if (opt == BNB_OPT_ADEMAMIX) {
      st.s1[i] = st.s1[i] * b1 + (1 - b1) * gp;
      st.s1b[i] = st.s1b[i] * b3 + (1 - b3) * gp;
      st.s2[i] = st.s2[i] * b2 + (1 - b2) * gp * gp;
      double pn = round_to(dtype, p0 - lr * ((st.s1[i] / c1 + P.alpha * st.s1b[i]) / (std::sqrt(st.s2[i]) / c2 + eps)));
      if (wd > 0) pn = round_to(dtype, pn * (1 - lr * wd));
      p[i] = static_cast<float>(pn);
    } else {
      if (wd > 0 && opt != BNB_OPT_LION) gp = round_to(dtype, gp + p0 * wd);
      if (P.skip_zeros && gp == 0.0) continue;
      double& s = st.s1[i];
      if (mom) {
        s = P.step == 1 ? gp : s * b1 + gp;
        p[i] = round_to(dtype, p0 + us * (-lr * s));
      } else if (opt == BNB_OPT_RMSPROP) {
        s = s * b1 + (1 - b1) * gp * gp;
        p[i] = round_to(dtype, p0 - us * (lr * gp / (std::sqrt(s) + eps)));
      } else if (opt == BNB_OPT_ADAGRAD) {
        s = s + gp * gp;
        p[i] = round_to(dtype, p0 - lr * gp / (std::sqrt(s) + eps));
      } else {  // Lion
        double p1 = wd > 0 ? (dtype == BNB_F32 ? p0 * (1 - lr * wd) : round_to(dtype, p0 * (1 - lr * wd))) : p0;
        const double arg = s * b1 + (1 - b1) * gp;
        const double sg = arg > 0 ? 1.0 : arg < 0 ? -1.0 : 0.0;
        p[i] = round_to(dtype, p1 - lr * sg);
        s = s * b2 + (1 - b2) * gp;
      }
    }
  }
}

// Random gradients with some exact zeros (skip_zeros) and a spread of magnitudes.
std::vector<float> make_grad(int64_t n, uint64_t seed, int32_t dtype) {
  std::vector<float> g = random_normal(n, seed, 0.1f);
  for (int64_t i = 0; i < n; i += 17) g[i] = 0.0f;
  for (int64_t i = 5; i < n; i += 97) g[i] *= 30.0f;
  return from_dtype(to_dtype(g, dtype), dtype);
}

class OptimBackend : public ::testing::TestWithParam<int32_t> {
 protected:
  void SetUp() override {
    ctx_ = std::make_unique<Context>(GetParam());
    ASSERT_TRUE(ctx_->ok()) << bnb_last_error_message();
  }
  std::unique_ptr<Context> ctx_;
};

}  // namespace

TEST_P(OptimBackend, Matches32BitReference) {
  const int64_t n = 4099;  // odd: a partial last vector
  for (int32_t opt : kAllOptims) {
    for (int32_t dtype : {BNB_F32, BNB_F16, BNB_BF16}) {
      for (int variant = 0; variant < 2; ++variant) {
        SCOPED_TRACE(std::string(optim_name(opt)) + " dtype " + std::to_string(dtype) + " variant " +
                     std::to_string(variant));
        bnb_optimizer_params_t P = default_optim_params(opt);
        if (variant == 1) {  // decay, scaled gradient, skipped zeros; clipping where defined
          P.weight_decay = 0.05f;
          P.gnorm_scale = 0.5f;
          P.skip_zeros = opt != BNB_OPT_ADEMAMIX;
          if (opt != BNB_OPT_LION && opt != BNB_OPT_ADEMAMIX && opt != BNB_OPT_LAMB && opt != BNB_OPT_LARS)
            P.max_unorm = 0.001f;
        }
        OptimTensor t(*ctx_, opt, 32, dtype, n);
        std::vector<float> p = from_dtype(to_dtype(random_normal(n, 7, 1.0f), dtype), dtype);
        t.set_p(p);
        Ref32 ref;
        ref.s1.assign(n, 0.0);
        ref.s1b.assign(n, 0.0);
        ref.s2.assign(n, 0.0);
        for (int64_t step = 1; step <= 4; ++step) {
          P.step = step;
          P.param_norm = l2_norm(p);
          const std::vector<float> g = make_grad(n, 100 + step, dtype);
          ASSERT_BNB_OK(t.step(P, g));
          const std::vector<float> before = p;
          ref32_step(opt, dtype, P, p, g, ref);
          const std::vector<float> got = t.p();
          int64_t bad = 0;
          for (int64_t i = 0; i < n; ++i) {
            const double upd = gpu_update_rel(GetParam()) * std::fabs(static_cast<double>(p[i]) - before[i]);
            const double tol = dtype == BNB_F32 ? 2.5e-7 * std::fabs(p[i]) + 1e-5 * P.lr + upd : ulp_of(dtype, p[i]);
            if (!(std::fabs(got[i] - p[i]) <= tol) && bad++ < 3) {
              ADD_FAILURE() << "step " << step << " p[" << i << "] " << got[i] << " vs " << p[i];
            }
          }
          // Keep both on the same trajectory (a dtype rounding flip would otherwise grow).
          p = got;
          if (clipped(opt, P)) {
            EXPECT_NEAR(t.unorm(), ref.unorm, unorm_rel(GetParam()) * ref.unorm) << "unorm_vec, step " << step;
          }
        }
        auto check_state = [&](const float* got, const std::vector<double>& want, const char* what) {
          double top = 0.0;
          for (double w : want) top = std::max(top, std::fabs(w));
          for (int64_t i = 0; i < n; ++i)
            ASSERT_NEAR(got[i], want[i], 1e-5 * std::fabs(want[i]) + 1e-6 * top) << what << "[" << i << "]";
        };
        const std::vector<float> s1 = t.state1_f32();
        check_state(s1.data(), ref.s1, "state1");
        if (opt == BNB_OPT_ADEMAMIX) check_state(s1.data() + n, ref.s1b, "state1 (slow EMA)");
        if (optim_two_states(opt)) check_state(t.state2_f32().data(), ref.s2, "state2");
      }
    }
  }
}

#if BNB_HAVE_REF
namespace {

// ------------------------------------------------------------------ 8-bit reference (binary32)

struct Ref8 {
  std::vector<uint8_t> c1, c2;  // c1: n codes (AdEMAMix 2n)
  std::vector<float> a1, a2;    // a1: nblocks (AdEMAMix 2 nblocks)
  float unorm = 0.0f;
};

uint8_t encode8(const float* table, float value, float inv, bool sign_fix) {
  int c = bnb::ref::select_code8(table, value * inv);
  if (sign_fix && std::signbit(table[c]) != std::signbit(value)) c = value > 0.0f ? c + 1 : c - 1;
  return static_cast<uint8_t>(c & 255);
}

void ref8_step(int32_t opt, int32_t dtype, const bnb_optimizer_params_t& P, std::vector<float>& p,
               const std::vector<float>& g, Ref8& st) {
  float q1[256], q2[256];
  bnb::copy_code_table(BNB_CODE_DYNAMIC_SIGNED, q1);
  bnb::copy_code_table(BNB_CODE_DYNAMIC_UNSIGNED, q2);
  const int64_t n = static_cast<int64_t>(p.size()), nb = bnb::ceil_div(n, 256);
  const float b1 = P.beta1, b2 = P.beta2, b3 = P.beta3, lr = P.lr, wd = P.weight_decay;
  const float omb1 = 1.0f - b1, omb2 = 1.0f - b2, omb3 = 1.0f - b3;
  const float c1 = 1.0f - static_cast<float>(std::pow(static_cast<double>(b1), static_cast<double>(P.step)));
  const float bias2 = 1.0f - static_cast<float>(std::pow(static_cast<double>(b2), static_cast<double>(P.step)));
  const float c2 = std::sqrt(bias2);
  const float step_size = (-lr * c2) / c1;
  const bool two = optim_two_states(opt);
  const bool ema = opt == BNB_OPT_ADEMAMIX;
  const bool adam = opt == BNB_OPT_ADAM || opt == BNB_OPT_LAMB;
  const bool mom = opt == BNB_OPT_MOMENTUM || opt == BNB_OPT_LARS;
  std::vector<float> m(n), v(n), e(n), aux(n);
  std::vector<uint8_t> fin(n), skip(n);
  // Phase A for every block (new fp32 states).
  for (int64_t i = 0; i < n; ++i) {
    const int64_t b = i / 256;
    const float graw = g[i];
    float gs = graw * P.gnorm_scale;
    if (two) {
      fin[i] = std::isfinite(graw);
      const float vd = q2[st.c2[i]] * st.a2[b];
      const float md = q1[st.c1[i]] * st.a1[b];
      float vn = dtype == BNB_BF16 ? std::fma(vd, b2, (omb2 * gs) * gs) : std::fma(omb2 * gs, gs, vd * b2);
      float mn = std::fma(omb1, gs, md * b1);
      float en = 0.0f;
      if (ema) en = std::fma(omb3, gs, (q1[st.c1[n + i]] * st.a1[nb + b]) * b3);
      m[i] = fin[i] ? mn : 0.0f;
      v[i] = fin[i] ? vn : 0.0f;
      e[i] = fin[i] ? en : 0.0f;
    } else {
      skip[i] = P.skip_zeros && graw == 0.0f;
      if (opt != BNB_OPT_LION && wd > 0.0f) gs = std::fma(p[i], wd, gs);
      const float sd = q1[st.c1[i]] * st.a1[b];
      float sn;
      if (mom) {
        sn = P.step == 1 ? gs : std::fma(sd, b1, gs);
      } else if (opt == BNB_OPT_RMSPROP) {
        sn = std::fma(omb1, gs * gs, sd * b1);
        aux[i] = gs;
      } else if (opt == BNB_OPT_ADAGRAD) {
        sn = std::fma(gs, gs, sd);
        aux[i] = gs;
      } else {
        const float p1 = wd > 0.0f ? round_to(dtype, p[i] * (1.0f - lr * wd)) : p[i];
        const float arg = std::fma(sd, b1, omb1 * gs);
        const float d = round_to(dtype, lr * (arg > 0 ? 1.0f : arg < 0 ? -1.0f : 0.0f));
        aux[i] = round_to(dtype, p1 - d);
        sn = std::fma(omb2, gs, sd * b2);
      }
      m[i] = skip[i] ? sd + 0.0f : sn;
    }
  }
  double us = 1.0;
  if (clipped(opt, P)) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) {
      double u;
      if (adam) {
        u = (static_cast<double>(m[i]) / c1) / (std::sqrt(static_cast<double>(v[i]) / bias2) + P.eps);
      } else {  // without weight decay; skipped elements have no update
        const float gs = g[i] * P.gnorm_scale;
        const float sd = q1[st.c1[i]] * st.a1[i / 256];
        if (skip[i]) {
          u = 0.0;
        } else if (mom) {
          u = P.step == 1 ? gs : std::fma(sd, b1, gs);
        } else {
          const float s = opt == BNB_OPT_RMSPROP ? std::fma(omb1, gs * gs, sd * b1) : std::fma(gs, gs, sd);
          u = gs / (std::sqrt(static_cast<double>(s)) + P.eps);
        }
      }
      sum += u * u;
    }
    st.unorm = static_cast<float>(sum);
    const double limit = static_cast<double>(P.max_unorm) * P.param_norm + (adam ? 0.0 : P.eps);
    us = std::sqrt(sum) > limit ? limit / std::sqrt(sum) : 1.0;
  }
  // Phases B-D.
  for (int64_t b = 0; b < nb; ++b) {
    const int64_t lo = b * 256, hi = std::min(n, lo + 256);
    float am1 = 0, am2 = 0, am3 = 0;
    for (int64_t i = lo; i < hi; ++i) {
      am1 = std::max(am1, std::fabs(m[i]));
      am2 = std::max(am2, std::fabs(v[i]));
      am3 = std::max(am3, std::fabs(e[i]));
    }
    st.a1[b] = am1;
    if (two) st.a2[b] = am2;
    if (ema) st.a1[nb + b] = am3;
    const float inv1 = bnb::rcp_approx(am1), inv2 = bnb::rcp_approx(am2), inv3 = bnb::rcp_approx(am3);
    for (int64_t i = lo; i < hi; ++i) {
      float pn;
      if (adam) {
        const float a_scale = static_cast<float>(us) * step_size;
        pn = round_to(dtype, std::fma(a_scale, m[i] / (std::sqrt(v[i]) + P.eps * c2), p[i]));
      } else if (ema) {
        const float den = std::fma(std::sqrt(v[i]), 1.0f / c2, P.eps);
        const float num = std::fma(P.alpha, e[i], m[i] * (1.0f / c1));
        pn = round_to(dtype, std::fma(-lr, num / den, p[i]));
      } else if (mom) {
        pn = round_to(dtype, std::fma(-lr * static_cast<float>(us), m[i], p[i]));
      } else if (opt == BNB_OPT_LION) {
        pn = aux[i];
      } else {
        const float a_scale = opt == BNB_OPT_ADAGRAD ? -lr : -lr * static_cast<float>(us);
        pn = round_to(dtype, std::fma(a_scale, aux[i] / (std::sqrt(m[i]) + P.eps), p[i]));
      }
      if (two && wd > 0.0f) pn = round_to(dtype, pn * (1.0f - lr * wd));
      if (two ? fin[i] : !skip[i]) p[i] = pn;
      st.c1[i] = encode8(q1, m[i], inv1, true);
      if (two) st.c2[i] = encode8(q2, v[i], inv2, false);
      if (ema) st.c1[n + i] = encode8(q1, e[i], inv3, true);
    }
  }
}

}  // namespace

TEST_P(OptimBackend, Matches8BitReference) {
  const int64_t n = 3 * 256 + 77;  // a partial last block
  const int64_t nb = 4;
  for (int32_t opt : kAllOptims) {
    for (int32_t dtype : {BNB_F32, BNB_F16, BNB_BF16}) {
      for (int variant = 0; variant < 2; ++variant) {
        SCOPED_TRACE(std::string(optim_name(opt)) + " dtype " + std::to_string(dtype) + " variant " +
                     std::to_string(variant));
        bnb_optimizer_params_t P = default_optim_params(opt);
        if (variant == 1) {
          P.weight_decay = 0.05f;
          P.gnorm_scale = 0.5f;
          P.skip_zeros = 1;
          if (opt != BNB_OPT_LION && opt != BNB_OPT_ADEMAMIX && opt != BNB_OPT_LAMB && opt != BNB_OPT_LARS)
            P.max_unorm = 0.001f;
        }
        OptimTensor t(*ctx_, opt, 8, dtype, n);
        std::vector<float> p = from_dtype(to_dtype(random_normal(n, 9, 1.0f), dtype), dtype);
        t.set_p(p);
        const int64_t copies = opt == BNB_OPT_ADEMAMIX ? 2 : 1;
        Ref8 ref{std::vector<uint8_t>(n * copies, 0), std::vector<uint8_t>(n, 0),
                 std::vector<float>(nb * copies, 0.0f), std::vector<float>(nb, 0.0f), 0.0f};
        int64_t code_diffs = 0;
        for (int64_t step = 1; step <= 4; ++step) {
          P.step = step;
          P.param_norm = l2_norm(p);
          std::vector<float> g = make_grad(n, 200 + step, dtype);
          if (step == 3 && optim_two_states(opt)) g[300] = NAN;  // 2-state: state reset, p kept
          ASSERT_BNB_OK(t.step(P, g));
          const std::vector<float> before = p;
          ref8_step(opt, dtype, P, p, g, ref);
          const std::vector<float> got = t.p();
          int64_t bad = 0;
          for (int64_t i = 0; i < n; ++i) {
            if (std::isnan(p[i]) && std::isnan(got[i])) continue;
            const double upd = gpu_update_rel(GetParam()) * std::fabs(static_cast<double>(p[i]) - before[i]);
            const double tol = dtype == BNB_F32 ? 2.5e-7 * std::fabs(p[i]) + 1e-5 * P.lr + upd : ulp_of(dtype, p[i]);
            if (!(std::fabs(got[i] - p[i]) <= tol) && bad++ < 3) {
              ADD_FAILURE() << "step " << step << " p[" << i << "] " << got[i] << " vs " << p[i];
            }
          }
          p = got;
          // Continue from the kernel's state so a boundary code does not diverge the runs.
          auto c1 = t.state1_codes();
          for (size_t i = 0; i < c1.size(); ++i) {
            if (c1[i] == ref.c1[i]) continue;
            ++code_diffs;
            EXPECT_EQ(std::abs(int(c1[i]) - int(ref.c1[i])) % 254, 1) << "state1[" << i << "] step " << step;
          }
          ref.c1 = c1;
          const auto a1 = t.absmax1();
          for (size_t b = 0; b < a1.size(); ++b) EXPECT_NEAR(a1[b], ref.a1[b], 1e-6 * ref.a1[b]) << "absmax1 " << b;
          ref.a1 = a1;
          if (optim_two_states(opt)) {
            auto c2 = t.state2_codes();
            for (size_t i = 0; i < c2.size(); ++i) {
              if (c2[i] == ref.c2[i]) continue;
              ++code_diffs;
              EXPECT_EQ(std::abs(int(c2[i]) - int(ref.c2[i])), 1) << "state2[" << i << "] step " << step;
            }
            ref.c2 = c2;
            const auto a2 = t.absmax2();
            for (size_t b = 0; b < a2.size(); ++b) EXPECT_NEAR(a2[b], ref.a2[b], 1e-6 * ref.a2[b]) << "absmax2 " << b;
            ref.a2 = a2;
          }
          if (clipped(opt, P)) {
            EXPECT_NEAR(t.unorm(), ref.unorm, unorm_rel(GetParam()) * ref.unorm) << "unorm_vec, step " << step;
          }
        }
        EXPECT_LE(code_diffs, n * copies * 4 / 200);
        if (opt == BNB_OPT_ADAM || opt == BNB_OPT_ADEMAMIX) {
          // The NaN gradient of step 3 reset that element's state to zero (then step 4 updated it).
          EXPECT_FALSE(std::isnan(p[300]));
        }
      }
    }
  }
}

// Momentum's first 8-bit step stores s = g with absmax 1 (one g = 1.0 per block, RCP(1) = 1), so
// the codes are Q(g) + sign fix exactly: g on every DYN8S midpoint and one ulp either side
// (ties go to the even index, docs/FORMATS.md §2.3). No tolerance.
TEST_P(OptimBackend, EncoderExactOnCodeBoundaries) {
  float q[256];
  bnb::copy_code_table(BNB_CODE_DYNAMIC_SIGNED, q);
  std::vector<float> g;
  for (int j = 0; j < 255; ++j) {
    const float mid = (q[j] + q[j + 1]) * 0.5f;
    for (float v : {std::nextafter(mid, -2.0f), mid, std::nextafter(mid, 2.0f)}) {
      if (g.size() % 256 == 0) g.push_back(1.0f);
      g.push_back(v);
    }
  }
  const int64_t n = static_cast<int64_t>(g.size());
  OptimTensor t(*ctx_, BNB_OPT_MOMENTUM, 8, BNB_F32, n);
  t.set_p(std::vector<float>(n, 0.0f));
  ASSERT_BNB_OK(t.step(default_optim_params(BNB_OPT_MOMENTUM), g));
  const auto codes = t.state1_codes();
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(codes[i], encode8(q, g[i], 1.0f, true)) << "g = " << g[i];
}
#endif  // BNB_HAVE_REF

TEST_P(OptimBackend, NonFiniteGradientResets8BitState) {
  const int64_t n = 512;
  OptimTensor t(*ctx_, BNB_OPT_ADAM, 8, BNB_F32, n);
  std::vector<float> p = random_normal(n, 3, 1.0f);
  t.set_p(p);
  bnb_optimizer_params_t P = default_optim_params(BNB_OPT_ADAM);
  std::vector<float> g = random_normal(n, 4, 0.1f);
  ASSERT_BNB_OK(t.step(P, g));
  const std::vector<float> p1 = t.p();
  g[10] = NAN;
  g[300] = INFINITY;
  P.step = 2;
  ASSERT_BNB_OK(t.step(P, g));
  const std::vector<float> p2 = t.p();
  EXPECT_EQ(p2[10], p1[10]);
  EXPECT_EQ(p2[300], p1[300]);
  EXPECT_NE(p2[11], p1[11]);
  // A reset element decodes to zero: the signed zero code (127) or its sign-fixed neighbour.
  const auto c1 = t.state1_codes();
  const auto c2 = t.state2_codes();
  float q1[256], q2[256];
  bnb::copy_code_table(BNB_CODE_DYNAMIC_SIGNED, q1);
  bnb::copy_code_table(BNB_CODE_DYNAMIC_UNSIGNED, q2);
  const auto a1 = t.absmax1();
  EXPECT_LE(std::fabs(q1[c1[10]] * a1[0]), 1e-5f * a1[0]);
  EXPECT_EQ(q2[c2[300]], 0.0f);
}

TEST_P(OptimBackend, SkipZerosKeepsParameter) {
  for (int32_t bits : {32, 8}) {
    for (int32_t opt : {BNB_OPT_ADAM, BNB_OPT_MOMENTUM, BNB_OPT_LION}) {
      if (bits == 8 && opt == BNB_OPT_ADAM) continue;  // 8-bit 2-state ignores skip_zeros (docs/OPS.md §6.6)
      SCOPED_TRACE(std::string(optim_name(opt)) + " bits " + std::to_string(bits));
      const int64_t n = 300;
      OptimTensor t(*ctx_, opt, bits, BNB_F32, n);
      const std::vector<float> p = random_normal(n, 5, 1.0f);
      t.set_p(p);
      bnb_optimizer_params_t P = default_optim_params(opt);
      P.skip_zeros = 1;
      std::vector<float> g = random_normal(n, 6, 0.1f);
      g[7] = 0.0f;
      g[299] = 0.0f;
      ASSERT_BNB_OK(t.step(P, g));
      const std::vector<float> got = t.p();
      EXPECT_EQ(got[7], p[7]);
      EXPECT_EQ(got[299], p[299]);
      EXPECT_NE(got[8], p[8]);
    }
  }
}

TEST_P(OptimBackend, RejectsBadInput) {
  const int64_t n = 256;
  OptimTensor t(*ctx_, BNB_OPT_LION, 32, BNB_F32, n);
  t.set_p(random_normal(n, 1, 1.0f));
  const std::vector<float> g = random_normal(n, 2, 1.0f);
  bnb_optimizer_params_t P = default_optim_params(BNB_OPT_LION);
  P.max_unorm = 1.0f;  // clipping is not defined for Lion
  EXPECT_EQ(t.step(P, g), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_NE(std::string(bnb_last_error_message()), "");
  P = default_optim_params(BNB_OPT_LION);
  P.beta1 = NAN;
  EXPECT_EQ(t.step(P, g), BNB_ERR_INVALID_ARGUMENT);
  P = default_optim_params(BNB_OPT_LION);
  P.step = 0;
  EXPECT_EQ(t.step(P, g), BNB_ERR_INVALID_ARGUMENT);
  P = default_optim_params(BNB_OPT_LION);
  P.max_unorm = -1.0f;
  EXPECT_EQ(t.step(P, g), BNB_ERR_INVALID_ARGUMENT);
  P = default_optim_params(BNB_OPT_LION);
  P.weight_decay = -0.1f;
  EXPECT_EQ(t.step(P, g), BNB_ERR_INVALID_ARGUMENT);
  OptimTensor adam(*ctx_, BNB_OPT_ADAM, 32, BNB_F32, n);
  P = default_optim_params(BNB_OPT_ADAM);
  P.beta2 = 1.0f;
  EXPECT_EQ(adam.step(P, g), BNB_ERR_INVALID_ARGUMENT);
  // Core checks: NULL tensors and params.
  bnb_optimizer_tensors_t tensors;
  bnb_optimizer_tensors_init(&tensors);
  P = default_optim_params(BNB_OPT_ADAM);
  P.n = n;
  EXPECT_EQ(bnb_optimizer_update(ctx_->get(), &P, &tensors, nullptr), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(bnb_optimizer_update(ctx_->get(), nullptr, &tensors, nullptr), BNB_ERR_INVALID_ARGUMENT);
  // A failed call leaves p untouched.
  const std::vector<float> before = t.p();
  P = default_optim_params(BNB_OPT_LION);
  P.max_unorm = 1.0f;
  EXPECT_EQ(t.step(P, g), BNB_ERR_INVALID_ARGUMENT);
  EXPECT_EQ(t.p(), before);
}

TEST_P(OptimBackend, PagedMemoryRoundTrip) {
  void* ptr = nullptr;
  const int64_t bytes = 1 << 20;
  ASSERT_BNB_OK(bnb_paged_alloc(ctx_->get(), bytes, &ptr));
  ASSERT_NE(ptr, nullptr);
  ASSERT_BNB_OK(bnb_paged_prefetch(ctx_->get(), ptr, bytes, 1, nullptr));
  std::vector<float> host(bytes / 4);
  for (size_t i = 0; i < host.size(); ++i) host[i] = static_cast<float>(i);
  ASSERT_BNB_OK(bnb_memcpy(ctx_->get(), ptr, host.data(), bytes, BNB_MEMCPY_HOST_TO_BACKEND, nullptr));
  ASSERT_BNB_OK(bnb_paged_prefetch(ctx_->get(), ptr, bytes, 0, nullptr));
  ASSERT_BNB_OK(bnb_synchronize(ctx_->get(), nullptr));
  // Paged memory is usable by the host directly.
  EXPECT_EQ(static_cast<float*>(ptr)[12345], 12345.0f);
  EXPECT_EQ(bnb_paged_prefetch(ctx_->get(), ptr, bytes, 2, nullptr), BNB_ERR_INVALID_ARGUMENT);
  ASSERT_BNB_OK(bnb_paged_free(ctx_->get(), ptr));
}

INSTANTIATE_TEST_SUITE_P(Backends, OptimBackend, ::testing::ValuesIn(available_backends()),
                         [](const ::testing::TestParamInfo<int32_t>& info) { return backend_label(info.param); });
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(OptimBackend);
