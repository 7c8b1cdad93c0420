#include "parbench/manifest.h"

#include <algorithm>

#include "parbench/errors.h"

namespace parbench {

using nlohmann::json;

namespace {

const json& field(const json& obj, const char* key, const std::string& where) {
  if (!obj.is_object() || !obj.contains(key)) {
    throw FixtureError("manifest: " + where + " has no '" + key + "' field; rebuild the fixture set");
  }
  return obj.at(key);
}

std::string str_field(const json& obj, const char* key, const std::string& where) {
  const json& v = field(obj, key, where);
  if (!v.is_string()) throw FixtureError("manifest: " + where + "." + key + " must be a string");
  return v.get<std::string>();
}

int int_field(const json& obj, const char* key, const std::string& where) {
  const json& v = field(obj, key, where);
  if (!v.is_number_integer()) throw FixtureError("manifest: " + where + "." + key + " must be an integer");
  return v.get<int>();
}

std::vector<int64_t> shape_of(const json& v, const std::string& where) {
  if (!v.is_array()) throw FixtureError("manifest: " + where + ".shape must be a list of integers");
  std::vector<int64_t> shape;
  for (const auto& d : v) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) {
      throw FixtureError("manifest: " + where + ".shape must be a list of non-negative integers");
    }
    shape.push_back(d.get<int64_t>());
  }
  return shape;
}

// Pairs (name -> path) from a JSON object, in the order `names` gives.
std::vector<std::pair<std::string, std::string>> ordered_paths(const json& obj, const std::vector<std::string>& names,
                                                               const std::string& where) {
  if (!obj.is_object()) throw FixtureError("manifest: " + where + " must be an object {name: path}");
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& name : names) {
    if (!obj.contains(name) || !obj.at(name).is_string()) {
      throw FixtureError("manifest: " + where + " has no path for '" + name + "'");
    }
    out.emplace_back(name, obj.at(name).get<std::string>());
  }
  if (obj.size() != names.size()) {
    throw FixtureError("manifest: " + where + " names " + std::to_string(obj.size()) + " tensors but the model has " +
                       std::to_string(names.size()));
  }
  return out;
}

}  // namespace

void check_relative_path(const std::string& p) {
  const bool bad = p.empty() || p.front() == '/' || p.find('\\') != std::string::npos ||
                   p.find('\0') != std::string::npos || p.find("//") != std::string::npos || p.back() == '/';
  bool dotdot = false;
  std::size_t start = 0;
  while (start <= p.size()) {
    const std::size_t end = std::min(p.find('/', start), p.size());
    const std::string part = p.substr(start, end - start);
    if (part == ".." || part == ".") dotdot = true;
    start = end + 1;
  }
  if (bad || dotdot) {
    throw FixtureError("manifest path '" + p + "' must be relative to the set folder, use '/', and stay inside it");
  }
}

bool ArtifactEntry::serves(int size) const {
  return !sizes || std::find(sizes->begin(), sizes->end(), size) != sizes->end();
}

const ArtifactEntry* ModelEntry::artifact_for(const std::string& variant, int size) const {
  auto it = artifacts.find(variant);
  if (it == artifacts.end()) return nullptr;
  // An entry made for exactly this size wins over one that serves every size.
  for (const auto& a : it->second) {
    if (a.sizes && a.serves(size)) return &a;
  }
  for (const auto& a : it->second) {
    if (!a.sizes) return &a;
  }
  return nullptr;
}

Manifest Manifest::parse(const std::string& text) {
  json doc;
  try {
    doc = json::parse(text);
  } catch (const json::parse_error& e) {
    throw FixtureError(std::string("manifest.json is not valid JSON: ") + e.what());
  }
  if (!doc.is_object()) throw FixtureError("manifest.json must hold a JSON object");
  if (doc.value("format", std::string()) != "parbench-fixtures") {
    throw FixtureError("manifest.json is not a parbench fixture set (\"format\" must be \"parbench-fixtures\")");
  }
  Manifest m;
  const json& version = field(doc, "format_version", "manifest");
  if (!version.is_number_integer()) throw FixtureError("manifest: format_version must be an integer");
  m.format_version = version.get<int>();
  if (m.format_version != kFixtureFormatVersion) {
    throw FixtureError("fixture set has format_version " + std::to_string(m.format_version) +
                       " but this runner reads format_version " + std::to_string(kFixtureFormatVersion) +
                       ": rebuild the set with a matching parbench, or update the runner");
  }
  m.created_utc = doc.value("created_utc", std::string());
  if (doc.contains("generator")) m.generator = doc.at("generator");

  const json& tensors = field(doc, "tensors", "manifest");
  if (!tensors.is_object()) throw FixtureError("manifest: tensors must be an object {path: entry}");
  for (const auto& [path, entry] : tensors.items()) {
    check_relative_path(path);
    const std::string where = "tensors[\"" + path + "\"]";
    TensorEntry t;
    t.path = path;
    t.dtype = parse_dtype(str_field(entry, "dtype", where));
    t.shape = shape_of(field(entry, "shape", where), where);
    t.sha256 = str_field(entry, "sha256", where);
    m.tensors.emplace(path, std::move(t));
  }

  const json& models = field(doc, "models", "manifest");
  if (!models.is_object()) throw FixtureError("manifest: models must be an object {name: model}");
  for (const auto& [name, mj] : models.items()) {
    const std::string where = "models." + name;
    ModelEntry model;
    model.name = name;
    model.task = mj.value("task", std::string());
    model.example_size = mj.value("example_size", 0);
    const json& inputs = field(mj, "inputs", where);
    if (!inputs.is_array() || inputs.empty()) throw FixtureError("manifest: " + where + ".inputs must be a non-empty list");
    for (const auto& in : inputs) model.input_names.push_back(str_field(in, "name", where + ".inputs[]"));
    const json& outputs = field(mj, "outputs", where);
    if (!outputs.is_array() || outputs.empty()) throw FixtureError("manifest: " + where + ".outputs must be a non-empty list");
    for (const auto& o : outputs) {
      if (!o.is_string()) throw FixtureError("manifest: " + where + ".outputs must hold names");
      model.outputs.push_back(o.get<std::string>());
    }
    const json& artifacts = field(mj, "artifacts", where);
    if (!artifacts.is_object()) throw FixtureError("manifest: " + where + ".artifacts must be an object {variant: [...]}");
    for (const auto& [variant, list] : artifacts.items()) {
      if (!list.is_array()) throw FixtureError("manifest: " + where + ".artifacts." + variant + " must be a list");
      for (const auto& aj : list) {
        const std::string aw = where + ".artifacts." + variant + "[]";
        ArtifactEntry a;
        a.variant = variant;
        a.path = str_field(aj, "path", aw);
        check_relative_path(a.path);
        a.format = str_field(aj, "format", aw);
        a.sha256 = str_field(aj, "sha256", aw);
        a.bytes = aj.value("bytes", static_cast<int64_t>(0));
        if (aj.contains("sizes") && !aj.at("sizes").is_null()) {
          std::vector<int> sizes;
          for (const auto& s : aj.at("sizes")) sizes.push_back(s.get<int>());
          a.sizes = sizes;
        }
        if (aj.contains("meta") && aj.at("meta").is_object()) a.meta = aj.at("meta");
        model.artifacts[variant].push_back(std::move(a));
      }
    }
    const json& cases = field(mj, "cases", where);
    if (!cases.is_array()) throw FixtureError("manifest: " + where + ".cases must be a list");
    for (const auto& cj : cases) {
      CaseEntry c;
      c.id = str_field(cj, "id", where + ".cases[]");
      const std::string cw = where + ".cases[" + c.id + "]";
      c.size = int_field(cj, "size", cw);
      c.inputs = ordered_paths(field(cj, "inputs", cw), model.input_names, cw + ".inputs");
      c.golden = ordered_paths(field(cj, "golden", cw), model.outputs, cw + ".golden");
      for (const auto* list : {&c.inputs, &c.golden}) {
        for (const auto& [tname, tpath] : *list) {
          if (!m.tensors.count(tpath)) {
            throw FixtureError("manifest: " + cw + " uses " + tpath + " which is not listed in tensors");
          }
        }
      }
      model.cases.push_back(std::move(c));
    }
    m.models.push_back(std::move(model));
  }
  std::sort(m.models.begin(), m.models.end(), [](const ModelEntry& a, const ModelEntry& b) { return a.name < b.name; });
  return m;
}

const TensorEntry& Manifest::tensor(const std::string& rel_path) const {
  auto it = tensors.find(rel_path);
  if (it == tensors.end()) throw FixtureError("manifest lists no tensor " + rel_path);
  return it->second;
}

}  // namespace parbench
