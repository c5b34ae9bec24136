// Build-time generator: turns the measured per-significand deviation of the GPU's fast
// reciprocal (data/rcp_approx_delta.bin.gz, 2^23 signed bytes in {-1, 0, +1}) into the 2-bit
// packed table that src/common/rcp.h reads. Entry i holds (delta + 1) in bits 2*(i%4)..+1 of
// byte i/4, so the table is 2 MiB instead of 8.
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

constexpr size_t kEntries = size_t{1} << 23;

bool read_deltas(const char* path, std::vector<int8_t>* deltas) {
  gzFile in = gzopen(path, "rb");
  if (in == nullptr) {
    std::fprintf(stderr, "gen_rcp: cannot open %s\n", path);
    return false;
  }
  deltas->assign(kEntries + 1, 0);
  size_t got = 0;
  while (got < deltas->size()) {
    const int r = gzread(in, deltas->data() + got, static_cast<unsigned>(deltas->size() - got));
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  gzclose(in);
  if (got != kEntries) {  // the extra slot catches a file that is too long
    std::fprintf(stderr, "gen_rcp: %s holds %zu bytes, expected %zu\n", path, got, kEntries);
    return false;
  }
  deltas->resize(kEntries);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: gen_rcp <rcp_approx_delta.bin.gz> <out.bin>\n");
    return 2;
  }
  std::vector<int8_t> deltas;
  if (!read_deltas(argv[1], &deltas)) return 1;
  std::vector<uint8_t> packed(kEntries / 4, 0);
  for (size_t i = 0; i < kEntries; ++i) {
    const int d = deltas[i];
    if (d < -1 || d > 1) {
      std::fprintf(stderr, "gen_rcp: entry %zu is %d, expected -1, 0 or +1\n", i, d);
      return 1;
    }
    packed[i / 4] |= static_cast<uint8_t>((d + 1) << (2 * (i % 4)));
  }
  FILE* out = std::fopen(argv[2], "wb");
  if (out == nullptr || std::fwrite(packed.data(), 1, packed.size(), out) != packed.size() ||
      std::fclose(out) != 0) {
    std::fprintf(stderr, "gen_rcp: cannot write %s\n", argv[2]);
    return 1;
  }
  return 0;
}
