// A safetensors reader and writer, written from the format's published description: an 8-byte
// little-endian header length N, N bytes of JSON (tensor name -> {dtype, shape, data_offsets
// [begin, end)}, plus an optional "__metadata__" object of string -> string), then the data
// section, with offsets counted from its start.
//
// The reader memory-maps the file and checks everything before handing out a pointer; the writer
// fills a temporary file next to the destination and renames it only when complete, so a failed
// run never leaves a file under the final name.
#ifndef BNB_TOOLS_CLI_SAFETENSORS_H_
#define BNB_TOOLS_CLI_SAFETENSORS_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace bnb_cli {

// Every problem with a file, worded to name the file and, where one is at fault, the tensor.
class FileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Bytes per element of a safetensors dtype name ("F32", "BF16", ...); 0 for a name it doesn't know.
size_t dtype_size(const std::string& dtype);
bool is_float_dtype(const std::string& dtype);  // F32, F16, BF16: what the quantizers take

struct Tensor {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;    // offsets in the data section
  const uint8_t* data = nullptr;  // into the mapping; end - begin bytes
  uint64_t bytes() const { return end - begin; }
  int64_t numel() const;
};

std::string shape_string(const std::vector<int64_t>& shape);  // "[64, 128]"

class SafetensorsFile {
 public:
  // Maps and validates `path`; throws FileError.
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<Tensor>& tensors() const { return tensors_; }  // in data-offset order
  const Tensor* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  uint64_t file_size() const { return size_; }
  // Drops the pages of a tensor that has been read from this process's mapping (they stay in the
  // page cache and fault back in if read again), so streaming keeps about one tensor resident.
  void release(const Tensor& t) const;
  uint64_t header_size() const { return header_size_; }

 private:
  [[noreturn]] void fail(const std::string& what) const;
  void parse_header(const std::string& text);

  std::string path_;
  void* map_ = nullptr;
  uint64_t size_ = 0, header_size_ = 0;
  std::vector<Tensor> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A tensor to be written: enough to lay out the header before the data exists.
struct TensorPlan {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t bytes = 0;
};

class SafetensorsWriter {
 public:
  // Writes into "<path>.tmp.<pid>" and leaves room for a header of `header_capacity` bytes
  // (see header_bound). Throws FileError.
  SafetensorsWriter(const std::string& path, uint64_t header_capacity);
  ~SafetensorsWriter();  // removes the temporary file unless finish() succeeded
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // Appends one tensor's bytes; `bytes` must equal numel(shape) * dtype size.
  void add(const std::string& name, const std::string& dtype, const std::vector<int64_t>& shape,
           const void* data, uint64_t bytes);
  // Writes the header (padded with spaces to the reserved size), flushes, and renames the
  // temporary file to `path`.
  void finish(const std::map<std::string, std::string>& metadata);

  const std::string& path() const { return path_; }
  uint64_t data_bytes() const { return offset_; }

  // An upper bound on the header's length for these tensors (in any order) and this metadata,
  // rounded so the data section starts 8-byte aligned.
  static uint64_t header_bound(const std::vector<TensorPlan>& plan, const std::map<std::string, std::string>& metadata);

 private:
  void write_at(uint64_t pos, const void* data, uint64_t bytes);

  std::string path_, tmp_;
  int fd_ = -1;
  uint64_t capacity_ = 0, offset_ = 0;
  std::vector<Tensor> written_;  // data pointer unused
  bool finished_ = false;
};

}  // namespace bnb_cli

#endif  // BNB_TOOLS_CLI_SAFETENSORS_H_
