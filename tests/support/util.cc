#include "util.h"

#include <random>

#include "half.h"

namespace bnb_test {

std::vector<int32_t> available_backends() {
  std::vector<int32_t> kinds;
  int32_t count = 0;
  if (bnb_backend_count(&count) != BNB_SUCCESS) return kinds;
  for (int32_t i = 0; i < count; ++i) {
    bnb_backend_info_t info;
    info.struct_size = sizeof info;
    if (bnb_backend_get_info(i, &info) == BNB_SUCCESS && info.available) kinds.push_back(info.kind);
  }
  return kinds;
}

bool cpu_available() {
  for (int32_t k : available_backends())
    if (k == BNB_BACKEND_CPU) return true;
  return false;
}

std::string backend_label(int32_t kind) {
  switch (kind) {
    case BNB_BACKEND_CPU: return "cpu";
    case BNB_BACKEND_CUDA: return "cuda";
    case BNB_BACKEND_HIP: return "hip";
    default: return "auto";
  }
}

Context::Context(int32_t kind, int32_t num_threads, int32_t check_finite) : kind_(kind) {
  bnb_context_options_t opts;
  bnb_context_options_init(&opts);
  opts.backend = kind;
  opts.num_threads = num_threads;
  opts.check_finite = check_finite;
  if (bnb_context_create(&opts, &ctx_) != BNB_SUCCESS) ctx_ = nullptr;
}

Context::~Context() {
  if (ctx_ != nullptr) bnb_context_destroy(ctx_);
}

Buffer::Buffer(const Context& ctx, size_t bytes) : ctx_(ctx), bytes_(bytes) {
  if (bnb_malloc(ctx.get(), static_cast<int64_t>(bytes == 0 ? 1 : bytes), &ptr_) != BNB_SUCCESS) {
    ptr_ = nullptr;
    ADD_FAILURE() << "bnb_malloc(" << bytes << ") failed: " << bnb_last_error_message();
  }
}

Buffer::~Buffer() {
  if (ptr_ != nullptr) bnb_free(ctx_.get(), ptr_);
}

void Buffer::upload(const void* host, size_t bytes) {
  ASSERT_LE(bytes, bytes_);
  ASSERT_BNB_OK(bnb_memcpy(ctx_.get(), ptr_, host, static_cast<int64_t>(bytes), BNB_MEMCPY_HOST_TO_BACKEND, nullptr));
  ASSERT_BNB_OK(bnb_synchronize(ctx_.get(), nullptr));
}

void Buffer::fill(uint8_t byte) {
  std::vector<uint8_t> host(bytes_, byte);
  upload(host.data(), host.size());
}

std::vector<uint8_t> Buffer::download() const {
  std::vector<uint8_t> host(bytes_);
  EXPECT_EQ(bnb_synchronize(ctx_.get(), nullptr), BNB_SUCCESS) << bnb_last_error_message();
  EXPECT_EQ(bnb_memcpy(ctx_.get(), host.data(), ptr_, static_cast<int64_t>(bytes_), BNB_MEMCPY_BACKEND_TO_HOST,
                       nullptr),
            BNB_SUCCESS)
      << bnb_last_error_message();
  EXPECT_EQ(bnb_synchronize(ctx_.get(), nullptr), BNB_SUCCESS) << bnb_last_error_message();
  return host;
}

size_t dtype_size(int32_t dtype) {
  switch (dtype) {
    case BNB_F32: case BNB_I32: return 4;
    case BNB_F16: case BNB_BF16: return 2;
    default: return 1;
  }
}

int32_t dtype_from_name(const std::string& name) {
  if (name == "float32") return BNB_F32;
  if (name == "float16") return BNB_F16;
  if (name == "bfloat16") return BNB_BF16;
  if (name == "uint8") return BNB_U8;
  if (name == "int8") return BNB_I8;
  if (name == "int32") return BNB_I32;
  return -1;
}

std::vector<uint8_t> to_dtype(const std::vector<float>& values, int32_t dtype) {
  std::vector<uint8_t> out(values.size() * dtype_size(dtype));
  for (size_t i = 0; i < values.size(); ++i) {
    if (dtype == BNB_F32) {
      std::memcpy(&out[i * 4], &values[i], 4);
    } else {
      const uint16_t h = dtype == BNB_F16 ? bnb::f32_to_f16(values[i]) : bnb::f32_to_bf16(values[i]);
      std::memcpy(&out[i * 2], &h, 2);
    }
  }
  return out;
}

std::vector<float> from_dtype(const std::vector<uint8_t>& bytes, int32_t dtype) {
  const size_t n = bytes.size() / dtype_size(dtype);
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) {
    if (dtype == BNB_F32) {
      std::memcpy(&out[i], &bytes[i * 4], 4);
    } else {
      uint16_t h;
      std::memcpy(&h, &bytes[i * 2], 2);
      out[i] = dtype == BNB_F16 ? bnb::f16_to_f32(h) : bnb::bf16_to_f32(h);
    }
  }
  return out;
}

std::vector<float> random_normal(int64_t n, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<float> random_with_features(int64_t n, int64_t blocksize, uint64_t seed) {
  std::vector<float> v = random_normal(n, seed);
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ull);
  const int64_t nblocks = (n + blocksize - 1) / blocksize;
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t lo = b * blocksize, hi = std::min(n, lo + blocksize);
    switch (rng() % 8) {
      case 0:  // an all-zero block, with a -0.0
        for (int64_t i = lo; i < hi; ++i) v[i] = 0.0f;
        v[lo] = -0.0f;
        break;
      case 1:  // tiny values
        for (int64_t i = lo; i < hi; ++i) v[i] *= 1e-30f;
        break;
      case 2:  // one outlier
        v[lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(hi - lo))] = 1000.0f;
        break;
      case 3:  // values exactly at fractions of the absmax (ties in fp16/bf16 data)
        for (int64_t i = lo; i < hi; ++i) v[i] = static_cast<float>(static_cast<int>(rng() % 129) - 64) / 64.0f;
        break;
      default:
        break;
    }
  }
  return v;
}

}  // namespace bnb_test
