// The fixture-set manifest (docs/fixture-format.md), parsed and checked.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "parbench/tensor.h"

namespace parbench {

constexpr int kFixtureFormatVersion = 1;

struct TensorEntry {
  std::string path;
  DType dtype = DType::Float32;
  std::vector<int64_t> shape;
  std::string sha256;
};

struct ArtifactEntry {
  std::string variant;
  std::string path;
  std::string format;  // pt ptl onnx pte mlpackage ...
  std::string sha256;
  int64_t bytes = 0;
  std::optional<std::vector<int>> sizes;  // nullopt: serves every size
  nlohmann::json meta = nlohmann::json::object();

  bool serves(int size) const;
};

struct CaseEntry {
  std::string id;
  int size = 0;
  std::vector<std::pair<std::string, std::string>> inputs;  // in the model's input order
  std::vector<std::pair<std::string, std::string>> golden;  // in the model's output order
};

struct ModelEntry {
  std::string name;
  std::string task;
  int example_size = 0;
  std::vector<std::string> input_names;
  std::vector<std::string> outputs;
  std::map<std::string, std::vector<ArtifactEntry>> artifacts;  // variant -> entries
  std::vector<CaseEntry> cases;

  // The artifact of `variant` that serves `size`, or nullptr.
  const ArtifactEntry* artifact_for(const std::string& variant, int size) const;
};

struct Manifest {
  int format_version = 0;
  std::string created_utc;
  nlohmann::json generator = nlohmann::json::object();
  std::map<std::string, TensorEntry> tensors;  // by manifest-relative path
  std::vector<ModelEntry> models;              // sorted by name

  // Throws FixtureError naming the problem (unknown format_version, missing field, bad path...).
  static Manifest parse(const std::string& text);
  const TensorEntry& tensor(const std::string& rel_path) const;
};

// A manifest path must be relative, use '/', and stay inside the set (no '..', no empty parts).
void check_relative_path(const std::string& rel_path);

}  // namespace parbench
