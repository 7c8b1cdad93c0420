// Exceptions the core raises. Every message says what was wrong and what to do about it.
#pragma once

#include <stdexcept>
#include <string>

namespace parbench {

// A fixture set that cannot be used: bad manifest, unknown format version, missing file.
class FixtureError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A fixture file whose bytes do not hash to the manifest's sha256.
class HashMismatch : public FixtureError {
 public:
  HashMismatch(const std::string& rel_path, const std::string& expected, const std::string& actual)
      : FixtureError("refused " + rel_path + ": sha256 is " + actual + " but the manifest says " + expected +
                     "; the file is corrupt or from another fixture set: rebuild or re-download the set"),
        path(rel_path) {}
  std::string path;
};

// The collector answered with an error that a retry will not fix (4xx), or never answered.
class CollectorError : public std::runtime_error {
 public:
  CollectorError(const std::string& what, long status_code) : std::runtime_error(what), status(status_code) {}
  long status;  // HTTP status, 0 when no response was received
};

// A model could not be loaded or run.
class RunnerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace parbench
