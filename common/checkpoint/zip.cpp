#include "common/checkpoint/zip.h"

#include <array>
#include <cstring>

#include "common/core/error.h"

namespace dsmath {
namespace {

constexpr uint32_t kLocalSig = 0x04034b50, kCentralSig = 0x02014b50, kEndSig = 0x06054b50;
constexpr uint32_t kEnd64Sig = 0x06064b50, kLocator64Sig = 0x07064b50;
constexpr uint32_t kMax32 = 0xffffffffu;
constexpr uint64_t kAlign = 64;  // torch aligns entry data so storages can be mapped in place

// Little-endian reads from the mapping; callers have checked the range.
uint64_t le(const std::byte* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | uint64_t(p[i]);
  return v;
}

// Slicing-by-8 CRC-32 (the zip polynomial), ~2 GB/s: fast enough for 7B shards.
struct CrcTables {
  uint32_t t[8][256];
  CrcTables() {
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = c & 1 ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  }
};

void put(std::string& s, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) s.push_back(char(v >> (8 * i)));
}

}  // namespace

uint32_t crc32_update(uint32_t crc, const void* data, size_t n) {
  static const CrcTables tables;
  const auto& t = tables.t;
  const auto* p = static_cast<const unsigned char*>(data);
  crc = ~crc;
  while (n >= 8) {
    uint32_t lo, hi;
    std::memcpy(&lo, p, 4);
    std::memcpy(&hi, p + 4, 4);
    lo ^= crc;
    crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
          t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
    p += 8;
    n -= 8;
  }
  while (n--) crc = t[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return ~crc;
}

std::vector<ZipEntry> read_zip_directory(const MappedFile& file) {
  return read_zip_directory(file.bytes(), file.path());
}

std::vector<ZipEntry> read_zip_directory(std::span<const std::byte> bytes,
                                         const std::filesystem::path& file) {
  const std::string fname = file.string();
  const std::byte* base = bytes.data();
  const uint64_t size = bytes.size();
  if (size < 22) fail(fname, ": not a zip file (", size, " bytes; truncated?)");

  // End of central directory: the last signature within the final 22 + 65535 bytes.
  uint64_t end = size - 22;
  const uint64_t lowest = size > 22 + 0xffff ? size - 22 - 0xffff : 0;
  while (le(base + end, 4) != kEndSig) {
    if (end == lowest)
      fail(fname, ": not a zip file (no end-of-central-directory record; truncated?)");
    --end;
  }
  uint64_t count = le(base + end + 10, 2);
  uint64_t cd_size = le(base + end + 12, 4);
  uint64_t cd_offset = le(base + end + 16, 4);
  if (end >= 20 && le(base + end - 20, 4) == kLocator64Sig) {
    uint64_t rec = le(base + end - 20 + 8, 8);
    if (rec > end - 20 || end - 20 - rec < 56 || le(base + rec, 4) != kEnd64Sig)
      fail(fname, ": zip64 end-of-central-directory record out of range");
    count = le(base + rec + 32, 8);
    cd_size = le(base + rec + 40, 8);
    cd_offset = le(base + rec + 48, 8);
  }
  if (cd_offset > end || cd_size > end - cd_offset)
    fail(fname, ": zip central directory (offset ", cd_offset, ", ", cd_size,
         " bytes) lies outside the file; truncated?");
  if (count > cd_size / 46) fail(fname, ": zip central directory claims ", count, " entries");

  std::vector<ZipEntry> entries;
  uint64_t p = cd_offset;
  const uint64_t cd_end = cd_offset + cd_size;
  for (uint64_t i = 0; i < count; ++i) {
    if (cd_end - p < 46 || le(base + p, 4) != kCentralSig)
      fail(fname, ": zip central directory record ", i, " is malformed");
    const std::byte* h = base + p;
    const uint64_t flags = le(h + 8, 2), method = le(h + 10, 2);
    const uint64_t name_len = le(h + 28, 2), extra_len = le(h + 30, 2), comment_len = le(h + 32, 2);
    if (cd_end - p - 46 < name_len + extra_len + comment_len)
      fail(fname, ": zip central directory record ", i, " runs past the directory");
    ZipEntry e;
    e.name.assign(reinterpret_cast<const char*>(h + 46), name_len);
    e.crc32 = uint32_t(le(h + 16, 4));
    uint64_t comp = le(h + 20, 4), uncomp = le(h + 24, 4), local = le(h + 42, 4);
    // Zip64 extra field: 64-bit values for exactly those fields stored as 0xffffffff.
    for (uint64_t x = 0; x + 4 <= extra_len;) {
      const std::byte* f = h + 46 + name_len + x;
      uint64_t id = le(f, 2), len = le(f + 2, 2);
      if (x + 4 + len > extra_len) fail(fname, ": zip entry '", e.name, "' has a bad extra field");
      if (id == 1) {
        uint64_t q = 4;
        for (uint64_t* v : {&uncomp, &comp, &local}) {
          if (*v != kMax32) continue;
          if (q + 8 > 4 + len) fail(fname, ": zip entry '", e.name, "' has a short zip64 field");
          *v = le(f + q, 8);
          q += 8;
        }
      }
      x += 4 + len;
    }
    if (flags & 1) fail(fname, ": zip entry '", e.name, "' is encrypted");
    if (method != 0)
      fail(fname, ": zip entry '", e.name, "' is compressed (method ", method,
           "); only stored entries, as torch.save writes them, can be memory-mapped");
    if (comp != uncomp)
      fail(fname, ": zip entry '", e.name, "' is stored but its sizes differ (", comp, " vs ",
           uncomp, ")");
    if (local > size || size - local < 30 || le(base + local, 4) != kLocalSig)
      fail(fname, ": zip entry '", e.name, "' has no local header at offset ", local,
           " (truncated?)");
    const uint64_t data = local + 30 + le(base + local + 26, 2) + le(base + local + 28, 2);
    if (data > size || uncomp > size - data)
      fail(fname, ": zip entry '", e.name, "' (", uncomp, " bytes at offset ", data,
           ") runs past the end of the file (", size, " bytes); truncated?");
    e.data_offset = data;
    e.size = uncomp;
    entries.push_back(std::move(e));
    p += 46 + name_len + extra_len + comment_len;
  }
  return entries;
}

ZipWriter::ZipWriter(const std::filesystem::path& path, bool force_zip64)
    : out_(path), force_zip64_(force_zip64) {}

void ZipWriter::begin(const std::string& name, uint64_t size) {
  const uint64_t offset = out_.pos();
  const bool zip64 = force_zip64_ || size >= kMax32 || offset >= kMax32;
  std::string h;
  put(h, kLocalSig, 4);
  put(h, zip64 ? 45 : 20, 2);  // version needed
  put(h, 0, 2);                // flags
  put(h, 0, 2);                // method: stored
  put(h, 0, 2);                // time 00:00
  put(h, 0x21, 2);             // date 1980-01-01, so output is reproducible
  put(h, 0, 4);                // CRC-32, patched in end()
  put(h, zip64 ? kMax32 : size, 4);
  put(h, zip64 ? kMax32 : size, 4);
  put(h, name.size(), 2);
  const uint64_t fixed = 30 + name.size() + (zip64 ? 20 : 0) + 4;
  const uint64_t pad = (kAlign - (offset + fixed) % kAlign) % kAlign;
  put(h, (zip64 ? 20 : 0) + 4 + pad, 2);
  h += name;
  if (zip64) {
    put(h, 1, 2);
    put(h, 16, 2);
    put(h, size, 8);
    put(h, size, 8);
  }
  put(h, 0x4246, 2);  // "FB": torch's padding field
  put(h, pad, 2);
  h.append(pad, 'Z');
  out_.write(h.data(), h.size());
  entries_.push_back({name, offset, size, 0, zip64});
}

void ZipWriter::end(uint64_t written, uint32_t crc) {
  Written& e = entries_.back();
  if (written != e.size)
    fail(out_.path().string(), ": entry '", e.name, "' got ", written, " bytes, declared ", e.size);
  e.crc = crc;
  unsigned char le_crc[4];
  for (int i = 0; i < 4; ++i) le_crc[i] = static_cast<unsigned char>(crc >> (8 * i));
  out_.write_at(e.header_offset + 14, le_crc, 4);
}

void ZipWriter::add(const std::string& name, std::string_view bytes) {
  begin(name, bytes.size());
  out_.write(bytes.data(), bytes.size());
  end(bytes.size(), crc32_update(0, bytes.data(), bytes.size()));
}

void ZipWriter::add_tensor(const std::string& name, const TensorSpec& spec, size_t index,
                           const TensorFiller& fill) {
  begin(name, spec.nbytes());
  uint32_t crc = 0;
  uint64_t written = 0;
  stream_tensor(out_, spec, index, fill, [&](const std::byte* p, size_t n) {
    crc = crc32_update(crc, p, n);
    written += n;
  });
  end(written, crc);
}

void ZipWriter::finish() {
  const uint64_t cd_offset = out_.pos();
  std::string cd;
  for (const Written& e : entries_) {
    const bool big_size = e.zip64 || e.size >= kMax32;
    const bool big_off = e.zip64 || e.header_offset >= kMax32;
    put(cd, kCentralSig, 4);
    put(cd, 45, 2);  // made by: version 4.5
    put(cd, big_size || big_off ? 45 : 20, 2);
    put(cd, 0, 2);
    put(cd, 0, 2);
    put(cd, 0, 2);
    put(cd, 0x21, 2);
    put(cd, e.crc, 4);
    put(cd, big_size ? kMax32 : e.size, 4);
    put(cd, big_size ? kMax32 : e.size, 4);
    put(cd, e.name.size(), 2);
    put(cd, (big_size ? 16 : 0) + (big_off ? 8 : 0) + (big_size || big_off ? 4 : 0), 2);
    put(cd, 0, 2);  // comment
    put(cd, 0, 2);  // disk
    put(cd, 0, 2);  // internal attributes
    put(cd, 0, 4);  // external attributes
    put(cd, big_off ? kMax32 : e.header_offset, 4);
    cd += e.name;
    if (big_size || big_off) {
      put(cd, 1, 2);
      put(cd, (big_size ? 16 : 0) + (big_off ? 8 : 0), 2);
      if (big_size) {
        put(cd, e.size, 8);
        put(cd, e.size, 8);
      }
      if (big_off) put(cd, e.header_offset, 8);
    }
  }
  out_.write(cd.data(), cd.size());
  const uint64_t n = entries_.size(), cd_size = cd.size();
  const bool zip64 = force_zip64_ || n >= 0xffff || cd_offset >= kMax32 || cd_size >= kMax32;
  std::string tail;
  if (zip64) {
    const uint64_t rec = out_.pos();
    put(tail, kEnd64Sig, 4);
    put(tail, 44, 8);
    put(tail, 45, 2);
    put(tail, 45, 2);
    put(tail, 0, 4);
    put(tail, 0, 4);
    put(tail, n, 8);
    put(tail, n, 8);
    put(tail, cd_size, 8);
    put(tail, cd_offset, 8);
    put(tail, kLocator64Sig, 4);
    put(tail, 0, 4);
    put(tail, rec, 8);
    put(tail, 1, 4);
  }
  put(tail, kEndSig, 4);
  put(tail, 0, 2);
  put(tail, 0, 2);
  put(tail, zip64 ? 0xffff : n, 2);
  put(tail, zip64 ? 0xffff : n, 2);
  put(tail, zip64 ? kMax32 : cd_size, 4);
  put(tail, zip64 ? kMax32 : cd_offset, 4);
  put(tail, 0, 2);
  out_.write(tail.data(), tail.size());
  out_.close();
}

}  // namespace dsmath
