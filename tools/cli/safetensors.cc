#include "safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

namespace bnb_cli {

namespace {

using Json = nlohmann::ordered_json;

// The spec caps the header at 100 MB; a larger length is a corrupt or hostile file.
constexpr uint64_t kMaxHeader = UINT64_C(100) << 20;

std::string errno_text() { return std::strerror(errno); }

// numel of a shape, or -1 when it overflows int64 (the caller names the tensor).
int64_t checked_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return -1;
    if (d != 0 && n > std::numeric_limits<int64_t>::max() / d) return -1;
    n *= d;
  }
  return n;
}

Json tensor_entry(const std::string& dtype, const std::vector<int64_t>& shape, uint64_t begin, uint64_t end) {
  Json e = Json::object();
  e["dtype"] = dtype;
  e["shape"] = shape;
  e["data_offsets"] = {begin, end};
  return e;
}

Json metadata_entry(const std::map<std::string, std::string>& metadata) {
  Json m = Json::object();
  for (const auto& kv : metadata) m[kv.first] = kv.second;
  return m;
}

}  // namespace

size_t dtype_size(const std::string& d) {
  static const std::map<std::string, size_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"I16", 2}, {"U16", 2}, {"F16", 2},
      {"BF16", 2}, {"I32", 4}, {"U32", 4}, {"F32", 4},     {"I64", 8},     {"U64", 8}, {"F64", 8}};
  const auto it = sizes.find(d);
  return it == sizes.end() ? 0 : it->second;
}

bool is_float_dtype(const std::string& d) { return d == "F32" || d == "F16" || d == "BF16"; }

int64_t Tensor::numel() const { return checked_numel(shape); }

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// ------------------------------------------------------------------------------------------ reader

SafetensorsFile::SafetensorsFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open: " + errno_text());
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("not a regular file");
  }
  size_ = static_cast<uint64_t>(st.st_size);
  if (size_ < 8) {
    ::close(fd);
    fail("truncated: " + std::to_string(size_) + " bytes, too short for the 8-byte header length");
  }
  map_ = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (map_ == MAP_FAILED) {
    map_ = nullptr;
    fail("cannot map: " + errno_text());
  }
  const uint8_t* base = static_cast<const uint8_t*>(map_);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | base[i];  // little-endian whatever the host
  if (n > kMaxHeader) fail("header length " + std::to_string(n) + " is larger than the format's 100 MB limit");
  if (n > size_ - 8)
    fail("truncated: the header claims " + std::to_string(n) + " bytes but only " + std::to_string(size_ - 8) +
         " follow the length");
  header_size_ = n;
  parse_header(std::string(reinterpret_cast<const char*>(base) + 8, n));
  ::madvise(map_, size_, MADV_SEQUENTIAL);
}

SafetensorsFile::~SafetensorsFile() {
  if (map_ != nullptr) ::munmap(map_, size_);
}

void SafetensorsFile::fail(const std::string& what) const {
  if (map_ != nullptr) {
    ::munmap(map_, size_);
    const_cast<SafetensorsFile*>(this)->map_ = nullptr;
  }
  throw FileError(path_ + ": " + what);
}

void SafetensorsFile::parse_header(const std::string& text) {
  Json header;
  try {
    header = Json::parse(text);
  } catch (const Json::parse_error& e) {
    fail(std::string("the header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail("the header is not a JSON object");
  const uint64_t data_size = size_ - 8 - header_size_;
  const uint8_t* data = static_cast<const uint8_t*>(map_) + 8 + header_size_;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const Json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) fail("__metadata__ entry '" + m.key() + "' is not a string");
        metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "': ";
    if (!v.is_object()) fail(where + "entry is not an object");
    if (!v.contains("dtype") || !v["dtype"].is_string()) fail(where + "no dtype string");
    if (!v.contains("shape") || !v["shape"].is_array()) fail(where + "no shape array");
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2)
      fail(where + "data_offsets is not a pair [begin, end]");
    Tensor t;
    t.name = name;
    t.dtype = v["dtype"].get<std::string>();
    const size_t esize = dtype_size(t.dtype);
    if (esize == 0) fail(where + "unknown dtype '" + t.dtype + "'");
    for (const Json& d : v["shape"]) {
      if (!d.is_number_integer()) fail(where + "shape " + v["shape"].dump() + " holds a non-integer");
      if (d.is_number_unsigned() ? d.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())
                                 : d.get<int64_t>() < 0)
        fail(where + "shape " + v["shape"].dump() + " has a negative or huge dimension");
      t.shape.push_back(d.get<int64_t>());
    }
    for (const Json& o : v["data_offsets"])
      if (!o.is_number_unsigned()) fail(where + "data_offsets " + v["data_offsets"].dump() + " are not non-negative integers");
    t.begin = v["data_offsets"][0].get<uint64_t>();
    t.end = v["data_offsets"][1].get<uint64_t>();
    if (t.begin > t.end) fail(where + "data_offsets " + v["data_offsets"].dump() + " end before they begin");
    if (t.end > data_size)
      fail(where + "data_offsets " + v["data_offsets"].dump() + " run past the data section (" +
           std::to_string(data_size) + " bytes): the file is truncated or the header is wrong");
    const int64_t numel = checked_numel(t.shape);
    if (numel < 0 || uint64_t(numel) > std::numeric_limits<uint64_t>::max() / esize)
      fail(where + "shape " + shape_string(t.shape) + " overflows");
    if (uint64_t(numel) * esize != t.bytes())
      fail(where + "shape " + shape_string(t.shape) + " of " + t.dtype + " needs " +
           std::to_string(uint64_t(numel) * esize) + " bytes but data_offsets give " + std::to_string(t.bytes()));
    t.data = data + t.begin;
    tensors_.push_back(std::move(t));
  }
  std::stable_sort(tensors_.begin(), tensors_.end(),
                   [](const Tensor& a, const Tensor& b) { return a.begin < b.begin || (a.begin == b.begin && a.end < b.end); });
  for (size_t i = 1; i < tensors_.size(); ++i) {
    const Tensor& prev = tensors_[i - 1];
    const Tensor& cur = tensors_[i];
    if (cur.begin < prev.end && cur.bytes() > 0 && prev.bytes() > 0)
      fail("tensors '" + prev.name + "' [" + std::to_string(prev.begin) + ", " + std::to_string(prev.end) +
           ") and '" + cur.name + "' [" + std::to_string(cur.begin) + ", " + std::to_string(cur.end) + ") overlap");
  }
  for (size_t i = 0; i < tensors_.size(); ++i) index_[tensors_[i].name] = i;
}

void SafetensorsFile::release(const Tensor& t) const {
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  const uint64_t from = (8 + header_size_ + t.begin) / page * page;
  const uint64_t to = std::min(size_, (8 + header_size_ + t.end + page - 1) / page * page);
  if (to > from) ::madvise(static_cast<uint8_t*>(map_) + from, to - from, MADV_DONTNEED);
}

const Tensor* SafetensorsFile::find(const std::string& name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

// ------------------------------------------------------------------------------------------ writer

SafetensorsWriter::SafetensorsWriter(const std::string& path, uint64_t header_capacity)
    : path_(path), tmp_(path + ".tmp." + std::to_string(::getpid())), capacity_(header_capacity) {
  fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw FileError(tmp_ + ": cannot create: " + errno_text());
}

SafetensorsWriter::~SafetensorsWriter() {
  if (fd_ >= 0) ::close(fd_);
  if (!finished_) ::unlink(tmp_.c_str());
}

void SafetensorsWriter::write_at(uint64_t pos, const void* data, uint64_t bytes) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t got = ::pwrite(fd_, p, std::min<uint64_t>(bytes, UINT64_C(1) << 30), static_cast<off_t>(pos));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) throw FileError(tmp_ + ": write failed: " + (got < 0 ? errno_text() : "no progress"));
    p += got;
    pos += static_cast<uint64_t>(got);
    bytes -= static_cast<uint64_t>(got);
  }
}

void SafetensorsWriter::add(const std::string& name, const std::string& dtype, const std::vector<int64_t>& shape,
                            const void* data, uint64_t bytes) {
  const size_t esize = dtype_size(dtype);
  const int64_t numel = checked_numel(shape);
  if (esize == 0 || numel < 0 || uint64_t(numel) * esize != bytes)
    throw FileError(path_ + ": tensor '" + name + "': " + std::to_string(bytes) + " bytes do not fit " + dtype + " " +
                    shape_string(shape));
  try {
    write_at(8 + capacity_ + offset_, data, bytes);
  } catch (const FileError& e) {
    throw FileError(std::string(e.what()) + " (tensor '" + name + "')");
  }
  Tensor t;
  t.name = name;
  t.dtype = dtype;
  t.shape = shape;
  t.begin = offset_;
  t.end = offset_ + bytes;
  written_.push_back(std::move(t));
  offset_ += bytes;
}

void SafetensorsWriter::finish(const std::map<std::string, std::string>& metadata) {
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata_entry(metadata);
  for (const Tensor& t : written_) header[t.name] = tensor_entry(t.dtype, t.shape, t.begin, t.end);
  std::string text = header.dump();
  if (text.size() > capacity_)
    throw FileError(path_ + ": internal error: header of " + std::to_string(text.size()) +
                    " bytes exceeds the reserved " + std::to_string(capacity_));
  text.append(capacity_ - text.size(), ' ');  // the spec allows trailing spaces in the header
  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = static_cast<uint8_t>(capacity_ >> (8 * i));
  write_at(0, len, 8);
  write_at(8, text.data(), text.size());
  if (::fsync(fd_) != 0) throw FileError(tmp_ + ": fsync failed: " + errno_text());
  const int rc = ::close(fd_);
  fd_ = -1;
  if (rc != 0) throw FileError(tmp_ + ": close failed: " + errno_text());
  if (::rename(tmp_.c_str(), path_.c_str()) != 0)
    throw FileError(path_ + ": cannot rename " + tmp_ + " into place: " + errno_text());
  finished_ = true;
}

uint64_t SafetensorsWriter::header_bound(const std::vector<TensorPlan>& plan,
                                         const std::map<std::string, std::string>& metadata) {
  uint64_t total = 0;
  for (const TensorPlan& p : plan) total += p.bytes;
  // Every offset written is at most `total`, so it has at most as many digits.
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata_entry(metadata);
  for (const TensorPlan& p : plan) header[p.name] = tensor_entry(p.dtype, p.shape, total, total);
  const uint64_t n = header.dump().size();
  return (n + 8 + 7) / 8 * 8;  // the data section then starts at a multiple of 8 bytes
}

}  // namespace bnb_cli
