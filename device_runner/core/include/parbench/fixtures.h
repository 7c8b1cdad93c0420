// Where fixture bytes come from: a local folder, or the collector (downloaded into a cache).
// Either way every file is checked against the manifest's sha256 before it is used.
#pragma once

#include <map>
#include <string>

#include "parbench/collector.h"

namespace parbench {

struct LocalFile {
  std::string path;             // a file, a folder (local .mlpackage), or a .zip of a folder
  bool zipped_folder = false;   // the collector sent a folder artifact as a zip
  std::string folder_sha256;    // for zipped_folder: the manifest sha256 of the unzipped folder
};

class FixtureSource {
 public:
  virtual ~FixtureSource() = default;
  virtual std::string manifest_text() = 0;
  // The verified local copy of a manifest-relative path; throws HashMismatch / FixtureError.
  virtual LocalFile fetch(const std::string& rel_path, const std::string& sha256) = 0;
  virtual std::string describe() const = 0;
};

class LocalFixtures : public FixtureSource {
 public:
  explicit LocalFixtures(std::string dir);
  std::string manifest_text() override;
  LocalFile fetch(const std::string& rel_path, const std::string& sha256) override;
  std::string describe() const override { return dir_; }

 private:
  std::string dir_;
  std::map<std::string, LocalFile> verified_;
};

class CollectorFixtures : public FixtureSource {
 public:
  // Files are kept in cache_dir under their manifest paths; a cached file whose sha256 still
  // matches is not downloaded again.
  CollectorFixtures(CollectorClient& client, std::string cache_dir);
  std::string manifest_text() override;
  LocalFile fetch(const std::string& rel_path, const std::string& sha256) override;
  std::string describe() const override;
  int downloads() const { return downloads_; }
  long long bytes_downloaded() const { return bytes_; }

 private:
  CollectorClient& client_;
  std::string cache_;
  std::map<std::string, LocalFile> verified_;
  int downloads_ = 0;
  long long bytes_ = 0;
};

}  // namespace parbench
