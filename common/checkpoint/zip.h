// The subset of the zip format that torch.save produces: stored (uncompressed) entries,
// zip64 records for files or offsets beyond 4 GiB, entry data aligned to 64 bytes. The reader
// parses the central directory of a memory-mapped file itself so entry data can be used in
// place; the writer streams entries and patches each CRC-32 into its local header afterwards.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/checkpoint/tensor_writer.h"
#include "common/core/mapped_file.h"

namespace dsmath {

struct ZipEntry {
  std::string name;
  uint64_t data_offset = 0;  // of the entry's bytes within the file
  uint64_t size = 0;
  uint32_t crc32 = 0;
};

// Validates every directory record and local header against the file size, and rejects
// compressed or encrypted entries, so data_offset + size is always inside the file.
// CRCs are not checked: that would read every weight at open time.
std::vector<ZipEntry> read_zip_directory(const MappedFile& file);
// The same on bytes already in memory; `file` names them in errors.
std::vector<ZipEntry> read_zip_directory(std::span<const std::byte> bytes,
                                         const std::filesystem::path& file);

uint32_t crc32_update(uint32_t crc, const void* data, size_t n);  // start with crc = 0

class ZipWriter {
 public:
  // force_zip64 writes zip64 records even for small files, so tests reach that code path
  // without writing 4 GiB.
  explicit ZipWriter(const std::filesystem::path& path, bool force_zip64 = false);

  void add(const std::string& name, std::string_view bytes);
  // An entry holding one tensor's bytes, produced through `fill` in chunks.
  void add_tensor(const std::string& name, const TensorSpec& spec, size_t index,
                  const TensorFiller& fill);
  void finish();  // central directory, zip64 end records when needed, close

 private:
  struct Written {
    std::string name;
    uint64_t header_offset, size;
    uint32_t crc;
    bool zip64;
  };
  void begin(const std::string& name, uint64_t size);
  void end(uint64_t written, uint32_t crc);

  OutFile out_;
  bool force_zip64_;
  std::vector<Written> entries_;
};

}  // namespace dsmath
