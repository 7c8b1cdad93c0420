#include "parbench/sha256.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <vector>

#include "parbench/errors.h"

#if defined(__APPLE__)
#include <CommonCrypto/CommonDigest.h>
#else
#include <openssl/evp.h>
#endif

namespace parbench {

namespace {

std::string to_hex(const unsigned char* digest, std::size_t n) {
  static const char* kHex = "0123456789abcdef";
  std::string out(n * 2, '0');
  for (std::size_t i = 0; i < n; ++i) {
    out[2 * i] = kHex[digest[i] >> 4];
    out[2 * i + 1] = kHex[digest[i] & 0xF];
  }
  return out;
}

// The one place that differs between platforms: an incremental sha256.
class Hasher {
 public:
#if defined(__APPLE__)
  Hasher() { CC_SHA256_Init(&ctx_); }
  void update(const void* data, std::size_t size) {
    const auto* p = static_cast<const unsigned char*>(data);
    while (size > 0) {  // CC_LONG is 32-bit
      const auto chunk = static_cast<CC_LONG>(std::min<std::size_t>(size, 1u << 30));
      CC_SHA256_Update(&ctx_, p, chunk);
      p += chunk;
      size -= chunk;
    }
  }
  std::string hex() {
    unsigned char digest[CC_SHA256_DIGEST_LENGTH];
    CC_SHA256_Final(digest, &ctx_);
    return to_hex(digest, sizeof(digest));
  }

 private:
  CC_SHA256_CTX ctx_;
#else
  Hasher() : ctx_(EVP_MD_CTX_new()) {
    if (ctx_ == nullptr || EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) != 1) {
      throw std::runtime_error("OpenSSL could not start a sha256 digest");
    }
  }
  ~Hasher() { EVP_MD_CTX_free(ctx_); }
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  void update(const void* data, std::size_t size) {
    if (EVP_DigestUpdate(ctx_, data, size) != 1) throw std::runtime_error("OpenSSL sha256 update failed");
  }
  std::string hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(ctx_, digest, &n) != 1) throw std::runtime_error("OpenSSL sha256 final failed");
    return to_hex(digest, n);
  }

 private:
  EVP_MD_CTX* ctx_;
#endif
};

}  // namespace

std::string sha256_hex(const void* data, std::size_t size) {
  Hasher h;
  h.update(data, size);
  return h.hex();
}

std::string sha256_hex(const std::string& bytes) { return sha256_hex(bytes.data(), bytes.size()); }

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FixtureError("cannot read " + path + " to check its sha256");
  Hasher h;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto got = in.gcount();
    if (got > 0) h.update(buf.data(), static_cast<std::size_t>(got));
  }
  if (in.bad()) throw FixtureError("read error on " + path);
  return h.hex();
}

std::string sha256_tree(const std::string& dir) {
  namespace fs = std::filesystem;
  if (!fs::is_directory(dir)) throw FixtureError(dir + " is not a folder");
  // Sorted by path components, the way parbench's Python side sorts paths.
  std::vector<std::vector<std::string>> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    std::vector<std::string> parts;
    for (const auto& part : fs::relative(entry.path(), dir)) parts.push_back(part.string());
    files.push_back(std::move(parts));
  }
  std::sort(files.begin(), files.end());
  Hasher h;
  for (const auto& parts : files) {
    std::string rel;
    for (std::size_t i = 0; i < parts.size(); ++i) rel += (i ? "/" : "") + parts[i];
    h.update(rel.data(), rel.size());
    const std::string file_hex = sha256_file((fs::path(dir) / rel).string());
    h.update(file_hex.data(), file_hex.size());
  }
  return h.hex();
}

}  // namespace parbench
