// sha256 as lowercase hex. OpenSSL on Linux, CommonCrypto on Apple platforms.
#pragma once

#include <cstddef>
#include <string>

namespace parbench {

std::string sha256_hex(const void* data, std::size_t size);
std::string sha256_hex(const std::string& bytes);
// Streams the file; throws FixtureError when it cannot be read.
std::string sha256_file(const std::string& path);
// sha256 of a folder as parbench computes it for folder artifacts (.mlpackage): over the
// sorted files, the relative path (with '/') then the hex sha256 of the file's bytes.
std::string sha256_tree(const std::string& dir);

}  // namespace parbench
