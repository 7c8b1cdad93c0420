#include "parbench/fixtures.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "parbench/errors.h"
#include "parbench/manifest.h"
#include "parbench/sha256.h"

namespace parbench {

namespace fs = std::filesystem;

namespace {

std::string read_all(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw FixtureError("cannot read " + path);
  std::ostringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

void write_atomic(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  const fs::path tmp = path.string() + ".part";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw FixtureError("cannot write " + tmp.string() + " (is the cache folder writable?)");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) throw FixtureError("short write on " + tmp.string() + " (disk full?)");
  }
  fs::rename(tmp, path);
}

}  // namespace

LocalFixtures::LocalFixtures(std::string dir) : dir_(std::move(dir)) {
  if (!fs::is_directory(dir_)) throw FixtureError("fixture folder " + dir_ + " does not exist");
  if (!fs::exists(fs::path(dir_) / "manifest.json")) {
    throw FixtureError(dir_ + " has no manifest.json: point --fixtures-dir at a fixture set (parbench fixtures builds one)");
  }
}

std::string LocalFixtures::manifest_text() { return read_all((fs::path(dir_) / "manifest.json").string()); }

LocalFile LocalFixtures::fetch(const std::string& rel_path, const std::string& sha256) {
  check_relative_path(rel_path);
  auto hit = verified_.find(rel_path);
  if (hit != verified_.end()) return hit->second;
  const fs::path p = fs::path(dir_) / rel_path;
  if (!fs::exists(p)) throw FixtureError("fixture set " + dir_ + " lacks " + rel_path + " (listed in its manifest)");
  const std::string actual = fs::is_directory(p) ? sha256_tree(p.string()) : sha256_file(p.string());
  if (actual != sha256) throw HashMismatch(rel_path, sha256, actual);
  LocalFile f{p.string(), false, ""};
  verified_[rel_path] = f;
  return f;
}

CollectorFixtures::CollectorFixtures(CollectorClient& client, std::string cache_dir)
    : client_(client), cache_(std::move(cache_dir)) {
  fs::create_directories(cache_);
}

std::string CollectorFixtures::describe() const { return client_.base_url() + " (cache " + cache_ + ")"; }

std::string CollectorFixtures::manifest_text() {
  const std::string text = client_.manifest();
  write_atomic(fs::path(cache_) / "manifest.json", text);
  return text;
}

LocalFile CollectorFixtures::fetch(const std::string& rel_path, const std::string& sha256) {
  check_relative_path(rel_path);
  auto hit = verified_.find(rel_path);
  if (hit != verified_.end()) return hit->second;
  const fs::path target = fs::path(cache_) / rel_path;
  if (fs::is_regular_file(target) && sha256_file(target.string()) == sha256) {
    LocalFile f{target.string(), false, ""};
    verified_[rel_path] = f;
    return f;
  }
  // Straight to disk: a large artifact is never held in memory.
  const fs::path part = target.string() + ".part";
  const HttpResponse r = client_.download(rel_path, part.string());
  ++downloads_;
  bytes_ += static_cast<long long>(fs::file_size(part));
  const std::string actual = sha256_file(part.string());
  auto archive = r.headers.find("x-parbench-archive");
  if (archive != r.headers.end() && archive->second == "zip") {
    // A folder artifact sent as a zip: the zip is checked against the sha256 the collector
    // computed for it; the unzipped folder can then be checked against the manifest.
    auto sent = r.headers.find("x-parbench-sha256");
    if (sent == r.headers.end()) {
      fs::remove(part);
      throw FixtureError("the collector sent " + rel_path + " as a zip without X-Parbench-Sha256; cannot verify it");
    }
    if (sent->second != actual) {
      fs::remove(part);
      throw HashMismatch(rel_path + " (zip)", sent->second, actual);
    }
    const fs::path zip = target.string() + ".zip";
    fs::rename(part, zip);
    LocalFile f{zip.string(), true, sha256};
    verified_[rel_path] = f;
    return f;
  }
  if (actual != sha256) {
    fs::remove(part);
    throw HashMismatch(rel_path, sha256, actual);
  }
  fs::rename(part, target);
  LocalFile f{target.string(), false, ""};
  verified_[rel_path] = f;
  return f;
}

}  // namespace parbench
