/* Quantize a random vector with bnb's C API (8-bit blockwise and NF4), dequantize it, print the
 * largest error and exit non-zero if any element is further from its input than rounding to the
 * nearest entry of the code table allows, or a block's absmax is not its largest |x|.
 *
 * Arrays go through bnb_malloc/bnb_memcpy, so the same program runs on every backend
 * (BNB_BACKEND=cpu|cuda|hip); on the CPU those are plain host allocations and copies.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <bnb.h>

#define CHECK(call)                                                                             \
  do {                                                                                          \
    bnb_status_t st_ = (call);                                                                  \
    if (st_ != BNB_SUCCESS) {                                                                   \
      fprintf(stderr, "%s failed: %s: %s\n", #call, bnb_status_string(st_), bnb_last_error_message()); \
      exit(2);                                                                                  \
    }                                                                                           \
  } while (0)

/* A roughly normal pseudo-random value (sum of four xorshift uniforms). */
static float next_value(uint64_t* s) {
  float sum = 0.0f;
  for (int i = 0; i < 4; ++i) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    sum += (float)(*s >> 40) / (float)(1 << 24) - 0.5f;
  }
  return sum;
}

/* The largest distance from a value in [-1, 1] to its nearest entry of a sorted code table:
   half the widest gap between neighbours, or the distance from an end of the range to the
   table's outermost entry (the signed 8-bit map stops short of -1). */
static float worst_rounding(int32_t which) {
  float table[256];
  int64_t count = 0;
  CHECK(bnb_get_code_table(which, table, &count));
  float worst = fmaxf(table[0] + 1.0f, 1.0f - table[count - 1]);
  for (int64_t i = 1; i < count; ++i) worst = fmaxf(worst, (table[i] - table[i - 1]) / 2.0f);
  return worst;
}

static void* backend_copy_of(bnb_context_t ctx, const void* host, int64_t bytes) {
  void* p = NULL;
  CHECK(bnb_malloc(ctx, bytes, &p));
  if (host) CHECK(bnb_memcpy(ctx, p, host, bytes, BNB_MEMCPY_HOST_TO_BACKEND, NULL));
  return p;
}

static void to_host(bnb_context_t ctx, void* host, const void* backend, int64_t bytes) {
  CHECK(bnb_memcpy(ctx, host, backend, bytes, BNB_MEMCPY_BACKEND_TO_HOST, NULL));
  CHECK(bnb_synchronize(ctx, NULL));
}

/* Largest |x - y| over all elements, and how many exceed `bound` times their block's absmax. */
static int count_errors(const float* x, const float* y, const float* absmax, int64_t n, int64_t blocksize,
                        float bound, float* max_err) {
  int bad = 0;
  *max_err = 0.0f;
  for (int64_t i = 0; i < n; ++i) {
    float err = fabsf(x[i] - y[i]);
    if (err > *max_err) *max_err = err;
    /* 1e-6 * absmax of slack for the float rounding of x / absmax and code * absmax. */
    if (err > (bound + 1e-6f) * absmax[i / blocksize]) ++bad;
  }
  return bad;
}

/* The stored absmax of each block must be that block's largest |x|. */
static int count_absmax_errors(const float* x, const float* absmax, int64_t n, int64_t blocksize) {
  int bad = 0;
  for (int64_t b = 0; b * blocksize < n; ++b) {
    float m = 0.0f;
    for (int64_t i = b * blocksize; i < n && i < (b + 1) * blocksize; ++i) m = fmaxf(m, fabsf(x[i]));
    if (m != absmax[b]) ++bad;
  }
  return bad;
}

int main(void) {
  const int64_t n = 100003; /* not a multiple of the block: the last block is partial */
  const int64_t blocksize = 256;
  const int64_t nblocks = (n + blocksize - 1) / blocksize;

  bnb_context_t ctx = NULL;
  CHECK(bnb_context_create(NULL, &ctx));
  int32_t kind = 0, device = 0;
  CHECK(bnb_context_get_backend(ctx, &kind, &device));
  printf("bnb %s, backend %d, device %d\n", bnb_version_string(), kind, device);

  float* x = malloc(n * sizeof(float));
  float* y = malloc(n * sizeof(float));
  float* absmax = malloc(nblocks * sizeof(float));
  uint64_t seed = 0x9e3779b97f4a7c15ull;
  for (int64_t i = 0; i < n; ++i) x[i] = next_value(&seed);

  float* d_x = backend_copy_of(ctx, x, n * (int64_t)sizeof(float));
  float* d_y = backend_copy_of(ctx, NULL, n * (int64_t)sizeof(float));
  float* d_absmax = backend_copy_of(ctx, NULL, nblocks * (int64_t)sizeof(float));
  uint8_t* d_q = backend_copy_of(ctx, NULL, n);
  int failures = 0;
  float max_err = 0.0f;

  /* 8-bit blockwise with the signed dynamic map (code = NULL). */
  CHECK(bnb_quantize_blockwise(ctx, BNB_F32, d_x, n, blocksize, NULL, d_q, d_absmax, NULL));
  CHECK(bnb_dequantize_blockwise(ctx, d_q, d_absmax, NULL, n, blocksize, BNB_F32, d_y, NULL));
  to_host(ctx, y, d_y, n * (int64_t)sizeof(float));
  to_host(ctx, absmax, d_absmax, nblocks * (int64_t)sizeof(float));
  int bad = count_errors(x, y, absmax, n, blocksize, worst_rounding(BNB_CODE_DYNAMIC_SIGNED), &max_err);
  bad += count_absmax_errors(x, absmax, n, blocksize);
  printf("8-bit blockwise: max error %.6f (%d elements out of bounds)\n", max_err, bad);
  failures += bad;

  /* NF4 4-bit with plain per-block scales. */
  CHECK(bnb_quantize_4bit(ctx, BNB_NF4, BNB_F32, d_x, n, blocksize, d_q, d_absmax, NULL));
  bnb_scales_t scales;
  CHECK(bnb_scales_init(&scales));
  scales.struct_size = sizeof(scales);
  scales.absmax = d_absmax;
  CHECK(bnb_dequantize_4bit(ctx, BNB_NF4, d_q, &scales, n, blocksize, BNB_F32, d_y, NULL));
  to_host(ctx, y, d_y, n * (int64_t)sizeof(float));
  to_host(ctx, absmax, d_absmax, nblocks * (int64_t)sizeof(float));
  bad = count_errors(x, y, absmax, n, blocksize, worst_rounding(BNB_CODE_NF4), &max_err);
  bad += count_absmax_errors(x, absmax, n, blocksize);
  printf("NF4: max error %.6f (%d elements out of bounds)\n", max_err, bad);
  failures += bad;

  /* A bad argument is a status and a message, not a crash. */
  bnb_status_t st = bnb_quantize_blockwise(ctx, BNB_F32, d_x, n, 48, NULL, d_q, d_absmax, NULL);
  printf("blocksize 48: %s: %s\n", bnb_status_string(st), bnb_last_error_message());
  if (st != BNB_ERR_INVALID_ARGUMENT || strlen(bnb_last_error_message()) == 0) ++failures;

  CHECK(bnb_free(ctx, d_x));
  CHECK(bnb_free(ctx, d_y));
  CHECK(bnb_free(ctx, d_absmax));
  CHECK(bnb_free(ctx, d_q));
  CHECK(bnb_context_destroy(ctx));
  free(x);
  free(y);
  free(absmax);
  if (failures) {
    fprintf(stderr, "FAILED: %d checks\n", failures);
    return 1;
  }
  printf("OK\n");
  return 0;
}
