#include "registry.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include "error.h"

namespace bnb {
namespace {

const char* const kNames[] = {"cpu", "cuda", "hip"};

bnb_status_t host_fail(bnb_status_t status, const char* message) {
  return fail(status, message != nullptr ? message : "");
}

void host_log(int32_t level, const char* message) { log(level, message != nullptr ? message : ""); }

const bnb_host_api_t kHostApi = {sizeof(bnb_host_api_t), &host_fail, &host_log};

bool file_exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

bool read_at(int fd, uint64_t offset, void* buf, size_t bytes) {
  return ::pread(fd, buf, bytes, static_cast<off_t>(offset)) == static_cast<ssize_t>(bytes);
}

// dlopen maps a library's segments straight from the file, so a file shorter than its headers
// say (an interrupted copy or download) raises SIGBUS inside dlopen when the missing pages are
// touched. Before loading, check the ELF header and that the header tables and every loadable
// segment lie inside the file. Returns "" when the file looks whole, else what is wrong. Files of
// another ELF class or byte order are left to dlopen, which refuses them without mapping.
std::string check_elf_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::string("cannot open it: ") + std::strerror(errno);
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st;
  if (::fstat(fd, &st) != 0) return std::string("cannot stat it: ") + std::strerror(errno);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  const std::string bytes = " (" + std::to_string(size) + " bytes)";
  ElfW(Ehdr) eh;
  if (!read_at(fd, 0, &eh, sizeof eh) || std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0)
    return "not an ELF file" + bytes;
  const unsigned char native_class = sizeof(void*) == 8 ? ELFCLASS64 : ELFCLASS32;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  const unsigned char native_data = ELFDATA2LSB;
#else
  const unsigned char native_data = ELFDATA2MSB;
#endif
  if (eh.e_ident[EI_CLASS] != native_class || eh.e_ident[EI_DATA] != native_data) return "";
  if (eh.e_type != ET_DYN) return "not a shared library (ELF type " + std::to_string(eh.e_type) + ")";
  // [offset, offset + length) must lie in the file; both are at most 2^64 - 1, so compare without
  // adding.
  const auto inside = [size](uint64_t offset, uint64_t length) { return offset <= size && length <= size - offset; };
  const auto truncated = [&](const char* what, uint64_t end) {
    return std::string("truncated or damaged file") + bytes + ": its " + what + " end at byte " + std::to_string(end);
  };
  if (eh.e_phentsize != sizeof(ElfW(Phdr)) || eh.e_phnum == 0)
    return "damaged ELF header (program header size " + std::to_string(eh.e_phentsize) + ", count " +
           std::to_string(eh.e_phnum) + ")";
  const uint64_t ph_bytes = uint64_t{eh.e_phnum} * eh.e_phentsize;
  if (!inside(eh.e_phoff, ph_bytes)) return truncated("program headers", eh.e_phoff + ph_bytes);
  const uint64_t sh_bytes = uint64_t{eh.e_shnum} * eh.e_shentsize;
  if (eh.e_shoff != 0 && !inside(eh.e_shoff, sh_bytes)) return truncated("section headers", eh.e_shoff + sh_bytes);
  std::vector<ElfW(Phdr)> ph(eh.e_phnum);
  if (!read_at(fd, eh.e_phoff, ph.data(), ph_bytes)) return truncated("program headers", eh.e_phoff + ph_bytes);
  for (const ElfW(Phdr)& p : ph)
    if (p.p_type == PT_LOAD && !inside(p.p_offset, p.p_filesz))
      return truncated("loadable segments", p.p_offset + p.p_filesz);
  return "";
}

// The directory holding libbnb.so itself (works inside a Python wheel or an installed tree).
std::string own_directory() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&own_directory), &info) == 0 || info.dli_fname == nullptr) return "";
  std::string path = info.dli_fname;
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? std::string(".") : path.substr(0, slash);
}

// Plugin search order: beside libbnb.so, then each entry of $BNB_BACKEND_PATH. Never the cwd.
std::vector<std::string> search_dirs() {
  std::vector<std::string> dirs;
  const std::string own = own_directory();
  if (!own.empty()) dirs.push_back(own);
  if (const char* env = std::getenv("BNB_BACKEND_PATH")) {
    std::string list = env;
    size_t start = 0;
    while (start <= list.size()) {
      const size_t end = list.find(':', start);
      const std::string dir = list.substr(start, end == std::string::npos ? std::string::npos : end - start);
      if (!dir.empty()) dirs.push_back(dir);
      if (end == std::string::npos) break;
      start = end + 1;
    }
  }
  return dirs;
}

void load_one(Backend& b, const std::vector<std::string>& dirs) {
  const std::string file = "libbnb_backend_" + b.name + ".so";
  std::string searched;
  for (const std::string& dir : dirs) {
    const std::string candidate = dir + "/" + file;
    if (file_exists(candidate)) {
      b.path = candidate;
      break;
    }
    searched += (searched.empty() ? "" : ", ") + dir;
  }
  if (b.path.empty()) {
    b.detail = "plugin " + file + " not found (searched: " + (searched.empty() ? "nothing" : searched) + ")";
    logf(2, "%s: %s", b.name.c_str(), b.detail.c_str());
    return;
  }
  const std::string damaged = check_elf_file(b.path);
  if (!damaged.empty()) {
    b.detail = "cannot load " + b.path + ": " + damaged;
    logf(1, "%s: %s", b.name.c_str(), b.detail.c_str());
    return;
  }
  dlerror();
  b.handle = dlopen(b.path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (b.handle == nullptr) {
    const char* why = dlerror();
    b.detail = "cannot load " + b.path + ": " + (why ? why : "unknown dlopen error");
    logf(1, "%s: %s", b.name.c_str(), b.detail.c_str());
    return;
  }
  auto score_fn = reinterpret_cast<bnb_backend_score_fn>(dlsym(b.handle, "bnb_backend_score"));
  auto init_fn = reinterpret_cast<bnb_backend_init_fn>(dlsym(b.handle, "bnb_backend_init"));
  if (score_fn == nullptr || init_fn == nullptr) {
    b.detail = b.path + " is not a bnb plugin (bnb_backend_score/bnb_backend_init missing)";
    logf(1, "%s: %s", b.name.c_str(), b.detail.c_str());
    return;
  }
  const bnb_backend_ops_t* table = init_fn(&kHostApi);
  if (table == nullptr) {
    b.detail = b.path + ": plugin initialisation failed";
    logf(1, "%s: %s", b.name.c_str(), b.detail.c_str());
    return;
  }
  if (table->abi_version != BNB_BACKEND_ABI_VERSION) {
    b.detail = b.path + ": plugin ABI version " + std::to_string(table->abi_version) + ", core expects " +
               std::to_string(BNB_BACKEND_ABI_VERSION) + " (rebuild the plugin)";
    logf(1, "%s: %s", b.name.c_str(), b.detail.c_str());
    return;
  }
  const size_t required = offsetof(bnb_backend_ops_t, synchronize) + sizeof(table->synchronize);
  if (table->struct_size < required) {
    b.detail = b.path + ": plugin table too small (" + std::to_string(table->struct_size) + " bytes)";
    logf(1, "%s: %s", b.name.c_str(), b.detail.c_str());
    return;
  }
  // Ops that a newer core knows and an older plugin lacks stay NULL (= not offered).
  std::memcpy(&b.ops, table, std::min<size_t>(table->struct_size, sizeof(bnb_backend_ops_t)));
  if (b.ops.context_create == nullptr || b.ops.context_destroy == nullptr || b.ops.default_code == nullptr ||
      b.ops.mem_alloc == nullptr || b.ops.mem_free == nullptr || b.ops.mem_copy == nullptr ||
      b.ops.synchronize == nullptr) {
    b.detail = b.path + ": plugin lacks a required entry (contexts, code tables or memory)";
    logf(1, "%s: %s", b.name.c_str(), b.detail.c_str());
    return;
  }
  b.loaded = true;
  b.score = score_fn();
  b.device_count = b.ops.device_count != nullptr ? b.ops.device_count() : 0;
  char detail[256] = {0};
  if (b.ops.describe != nullptr) b.ops.describe(detail, sizeof detail);
  b.detail.assign(detail, strnlen(detail, sizeof detail));  // a plugin may fill the buffer unterminated
  logf(2, "%s: loaded %s, score %d, %d device(s): %s", b.name.c_str(), b.path.c_str(), b.score, b.device_count,
       b.detail.c_str());
}

std::vector<Backend>& registry() {
  static std::vector<Backend> list;
  static std::once_flag once;
  std::call_once(once, [] {
    const std::vector<std::string> dirs = search_dirs();
    for (int i = 0; i < 3; ++i) {
      Backend b;
      b.name = kNames[i];
      b.kind = i + 1;
      load_one(b, dirs);
      list.push_back(std::move(b));
    }
  });
  return list;
}

}  // namespace

const std::vector<Backend>& backends() { return registry(); }

const Backend* find_backend(int32_t kind) {
  for (const Backend& b : registry())
    if (b.kind == kind) return &b;
  return nullptr;
}

const char* backend_name(int32_t kind) {
  return (kind >= 1 && kind <= 3) ? kNames[kind - 1] : "auto";
}

}  // namespace bnb
