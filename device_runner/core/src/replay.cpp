#include "parbench/replay.h"

#include <algorithm>
#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <sys/utsname.h>
#include <unistd.h>

#if defined(__APPLE__)
#include <mach/mach.h>
#endif

#include "parbench/errors.h"
#include "parbench/metrics.h"

namespace parbench {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

template <typename T>
bool wanted(const std::vector<T>& filter, const T& value) {
  return filter.empty() || std::find(filter.begin(), filter.end(), value) != filter.end();
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : ", ") + s;
  return out;
}

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

json optional_str(const std::optional<std::string>& v) { return v ? json(*v) : json(nullptr); }

std::string safe_name(std::string s) {
  std::replace(s.begin(), s.end(), '/', '_');
  return s;
}

}  // namespace

std::unique_ptr<ModelRunner> make_runner(const PlannedCase& pc, const RunnerRegistry& registry,
                                         const ReplayOptions& options) {
  if (!pc.problem.empty()) throw RunnerError(pc.problem);
  const RunnerKind* kind = registry.find(pc.artifact->format);
  if (!kind) throw RunnerError("no runner for format '" + pc.artifact->format + "'");
  RunnerOptions ropts;
  ropts.threads = options.threads;
  ropts.compute_units = pc.compute_units;
  ropts.input_names = pc.model->input_names;
  ropts.output_names = pc.model->outputs;
  ropts.artifact_meta = pc.artifact->meta;
  return kind->make(ropts);
}

NamedTensors read_case_tensors(const std::vector<std::pair<std::string, std::string>>& paths, const Manifest& manifest,
                               FixtureSource& source) {
  NamedTensors out;
  for (const auto& [name, path] : paths) {
    const TensorEntry& te = manifest.tensor(path);
    out.emplace_back(name, read_tensor_file(source.fetch(path, te.sha256).path, te.dtype, te.shape));
  }
  return out;
}

std::unique_ptr<ModelRunner> load_case_runner(const PlannedCase& pc, const Manifest& manifest, FixtureSource& source,
                                              const RunnerRegistry& registry, const ReplayOptions& options) {
  std::unique_ptr<ModelRunner> runner = make_runner(pc, registry, options);
  const LocalFile artifact = source.fetch(pc.artifact->path, pc.artifact->sha256);
  runner->prepare(artifact);
  runner->compile(artifact);
  runner->load(artifact);
  runner->set_inputs(read_case_tensors(pc.kase->inputs, manifest, source));
  return runner;
}

std::string PlannedCase::test_id() const {
  std::string id = model->name + "-" + variant + "-" + std::to_string(kase->size);
  if (!compute_units.empty()) id += "-" + compute_units;
  return id;
}

std::vector<PlannedCase> plan_cases(const Manifest& manifest, const RunnerRegistry& registry,
                                    const ReplayOptions& options) {
  std::vector<std::string> names;
  for (const auto& m : manifest.models) names.push_back(m.name);
  for (const auto& want : options.models) {
    if (!wanted(names, want) || names.empty()) {
      throw FixtureError("model '" + want + "' is not in this fixture set; it has: " + join(names));
    }
  }
  std::set<std::string> variants_seen;
  std::vector<PlannedCase> plan;
  for (const auto& model : manifest.models) {
    if (!wanted(options.models, model.name)) continue;
    for (const auto& [variant, entries] : model.artifacts) {
      variants_seen.insert(variant);
      const bool asked = !options.variants.empty() && wanted(options.variants, variant);
      if (!options.variants.empty() && !asked) continue;
      const bool runnable = std::any_of(entries.begin(), entries.end(),
                                        [&](const ArtifactEntry& a) { return registry.find(a.format) != nullptr; });
      if (!asked && !runnable) continue;  // a form this device cannot run, and nobody asked for it
      for (const auto& kase : model.cases) {
        if (!wanted(options.sizes, kase.size)) continue;
        PlannedCase pc;
        pc.model = &model;
        pc.variant = variant;
        pc.kase = &kase;
        pc.artifact = model.artifact_for(variant, kase.size);
        const RunnerKind* kind = pc.artifact ? registry.find(pc.artifact->format) : nullptr;
        if (!pc.artifact) {
          pc.problem = "no " + variant + " artifact of " + model.name + " serves size " + std::to_string(kase.size);
        } else if (!kind) {
          pc.problem = "no runner for format '" + pc.artifact->format + "' here (this runner has: " +
                       join(registry.formats()) + ")";
        }
        if (kind && !kind->compute_units.empty()) {
          for (const auto& cu : options.compute_units) {
            if (!wanted(kind->compute_units, cu)) {
              throw FixtureError("unknown compute units '" + cu + "'; choose from " + join(kind->compute_units));
            }
          }
          for (const auto& cu : kind->compute_units) {
            if (!wanted(options.compute_units, cu)) continue;
            PlannedCase with_cu = pc;
            with_cu.compute_units = cu;
            plan.push_back(with_cu);
          }
        } else {
          plan.push_back(pc);
        }
      }
    }
  }
  for (const auto& v : options.variants) {
    if (!variants_seen.count(v)) {
      std::vector<std::string> have(variants_seen.begin(), variants_seen.end());
      throw FixtureError("no model in this fixture set has variant '" + v + "'; variants present: " + join(have));
    }
  }
  return plan;
}

json run_case(const PlannedCase& pc, const Manifest& manifest, FixtureSource& source, const RunnerRegistry& registry,
              const ReplayOptions& options, const PlatformHooks& hooks) {
  json res = {
      {"model", pc.model->name},
      {"variant", pc.variant},
      {"size", pc.kase->size},
      {"case", pc.kase->id},
      {"compute_units", pc.compute_units.empty() ? json(nullptr) : json(pc.compute_units)},
      {"run_index", options.run_index},
      {"threads", options.threads},
      {"executor", "unavailable"},
      {"load_ms", nullptr},
      {"compile_ms", nullptr},
      {"first_run_ms", nullptr},
      {"samples_ns", json::array()},
      {"warmup_rounds", options.warmup},
      {"peak_memory_mb", nullptr},
      {"thermal_state_before", nullptr},
      {"thermal_state_after", nullptr},
      {"metrics", nullptr},
      {"xctest", nullptr},
      {"error", nullptr},
      {"extra", json::object()},
  };
  json& extra = res["extra"];
  if (hooks.thermal_state) res["thermal_state_before"] = optional_str(hooks.thermal_state());
  std::string stage = "plan";
  try {
    if (!pc.problem.empty()) throw RunnerError(pc.problem);
    const ArtifactEntry& art = *pc.artifact;
    extra["artifact"] = {{"path", art.path}, {"format", art.format}, {"sha256", art.sha256}, {"bytes", art.bytes}};
    if (!art.meta.empty()) extra["artifact"]["meta"] = art.meta;
    if (options.rounds < 1) throw RunnerError("rounds must be at least 1");

    stage = "fixtures";
    const LocalFile artifact_file = source.fetch(art.path, art.sha256);
    const NamedTensors inputs = read_case_tensors(pc.kase->inputs, manifest, source);
    const NamedTensors golden = read_case_tensors(pc.kase->golden, manifest, source);

    stage = "prepare";
    std::unique_ptr<ModelRunner> runner = make_runner(pc, registry, options);
    res["executor"] = runner->executor();
    if (!hooks.memory_measure.empty()) extra["memory_measure"] = hooks.memory_measure;
    if (hooks.reset_peak_memory) hooks.reset_peak_memory();
    const auto sample = [&hooks] {
      if (hooks.sample_memory) hooks.sample_memory();
    };
    runner->prepare(artifact_file);
    sample();

    stage = "compile";
    auto t0 = Clock::now();
    if (runner->compile(artifact_file)) res["compile_ms"] = ms_since(t0);
    sample();

    stage = "load";
    t0 = Clock::now();
    runner->load(artifact_file);
    res["load_ms"] = ms_since(t0);
    sample();

    stage = "first run";
    runner->set_inputs(inputs);
    t0 = Clock::now();
    runner->run();
    res["first_run_ms"] = ms_since(t0);
    const NamedTensors outputs = runner->outputs();  // metrics come from the first run
    sample();

    stage = "timed runs";
    for (int i = 0; i < options.warmup; ++i) runner->run();
    std::vector<int64_t> samples;
    samples.reserve(static_cast<std::size_t>(options.rounds));
    for (int i = 0; i < options.rounds; ++i) {
      const auto s = Clock::now();
      runner->run();
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - s).count();
      samples.push_back(std::max<int64_t>(ns, 1));
    }
    res["samples_ns"] = samples;
    sample();
    const json details = runner->details();
    if (!details.empty()) extra["runner"] = details;
    if (hooks.peak_memory_mb) {
      if (auto mb = hooks.peak_memory_mb()) res["peak_memory_mb"] = *mb;
    }

    stage = "compare";
    std::vector<std::string> got_names;
    for (const auto& [name, t] : outputs) got_names.push_back(name);
    json metrics = json::object();
    std::vector<std::string> problems;
    for (const auto& [name, ref] : golden) {
      // A structured binding cannot be captured by a generic lambda in C++17 (clang refuses it).
      const std::string& wanted_name = name;
      auto it = std::find_if(outputs.begin(), outputs.end(),
                             [&wanted_name](const auto& o) { return o.first == wanted_name; });
      if (it == outputs.end()) {
        problems.push_back("the model returned outputs [" + join(got_names) + "] but the fixture expects '" + name + "'");
        continue;
      }
      try {
        metrics[name] = compare_tensors(it->second, ref, pc.model->task);
      } catch (const RunnerError& e) {
        problems.push_back(name + ": " + e.what());
      }
    }
    res["metrics"] = metrics;
    if (!options.dump_dir.empty()) {
      namespace fs = std::filesystem;
      const fs::path dir = fs::path(options.dump_dir) / pc.model->name / pc.variant;
      fs::create_directories(dir);
      json dumped = json::object();
      for (const auto& [name, t] : outputs) {
        std::string file = safe_name(pc.kase->id) + (pc.compute_units.empty() ? "" : "-" + pc.compute_units) + "." +
                           name + ".bin";
        write_tensor_file((dir / file).string(), t);
        dumped[name] = {{"path", (dir / file).string()}, {"dtype", dtype_name(t.dtype)}, {"shape", t.shape}};
      }
      extra["dumped_outputs"] = dumped;
    }
    if (!problems.empty()) {
      std::string msg;
      for (const auto& p : problems) msg += (msg.empty() ? "" : "; ") + p;
      throw RunnerError(msg);
    }
  } catch (const std::exception& e) {
    res["error"] = stage + ": " + e.what();
  }
  if (hooks.thermal_state) res["thermal_state_after"] = optional_str(hooks.thermal_state());
  return res;
}

PlatformHooks default_platform_hooks() {
  PlatformHooks hooks;
#if defined(__linux__)
  // Writing 5 to clear_refs resets the peak RSS (VmHWM), so each case reports its own peak.
  hooks.reset_peak_memory = [] {
    std::ofstream f("/proc/self/clear_refs");
    if (f) f << "5";
  };
  hooks.peak_memory_mb = []() -> std::optional<double> {
    std::ifstream f("/proc/self/status");
    std::string line;
    while (std::getline(f, line)) {
      if (line.rfind("VmHWM:", 0) == 0) {
        std::istringstream in(line.substr(6));
        double kb = 0;
        if (in >> kb) return kb / 1024.0;
      }
    }
    return std::nullopt;
  };
  hooks.memory_measure = "VmHWM: peak resident set of the process during the case (reset before it)";
#elif defined(__APPLE__)
  // iOS cannot reset a peak: the case's figure is the largest phys_footprint (the figure jetsam
  // and Xcode's memory gauge use) seen at the end of each stage, minus the footprint before it.
  struct Footprint {
    std::optional<uint64_t> baseline;
    uint64_t peak = 0;
  };
  auto state = std::make_shared<Footprint>();
  const auto footprint = []() -> std::optional<uint64_t> {
    task_vm_info_data_t info;
    mach_msg_type_number_t count = TASK_VM_INFO_COUNT;
    if (task_info(mach_task_self(), TASK_VM_INFO, reinterpret_cast<task_info_t>(&info), &count) != KERN_SUCCESS) {
      return std::nullopt;
    }
    return static_cast<uint64_t>(info.phys_footprint);
  };
  hooks.reset_peak_memory = [state, footprint] {
    state->baseline = footprint();
    state->peak = state->baseline.value_or(0);
  };
  hooks.sample_memory = [state, footprint] {
    if (auto now = footprint()) state->peak = std::max(state->peak, *now);
  };
  hooks.peak_memory_mb = [state, footprint]() -> std::optional<double> {
    if (!state->baseline) return std::nullopt;
    if (auto now = footprint()) state->peak = std::max(state->peak, *now);
    return static_cast<double>(state->peak - *state->baseline) / (1024.0 * 1024.0);
  };
  hooks.memory_measure =
      "phys_footprint delta: largest footprint at the end of prepare, compile, load, first run and the "
      "timed runs, minus the footprint before the case";
#endif
  return hooks;
}

std::string utc_now_iso() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string new_run_id(const std::string& prefix) {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof(stamp), "%Y%m%dT%H%M%SZ", &tm);
  std::random_device rd;
  std::ostringstream out;
  out << prefix << "-" << stamp << "-" << std::hex << rd() << rd();
  return out.str();
}

json describe_host() {
  struct utsname u {};
  uname(&u);
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  const std::string os = std::string(u.sysname) + " " + u.release;
  const unsigned cores = std::thread::hardware_concurrency();
  return {
      {"machine", {{"cpu", u.machine}, {"os", os}, {"threads", cores}, {"hostname", host}}},
      {"device", {{"model", u.machine}, {"os", os}, {"name", host}}},
  };
}

ResultSink::ResultSink(CollectorClient* client, std::string run_id, std::size_t batch_size)
    : client_(client), run_id_(std::move(run_id)), batch_size_(std::max<std::size_t>(1, batch_size)) {}

void ResultSink::open(const json& run_doc) {
  if (client_) client_->put_run(run_id_, run_doc);
}

void ResultSink::add(const json& result) {
  all_.push_back(result);
  pending_.push_back(result);
  if (pending_.size() >= batch_size_) flush();
}

void ResultSink::flush() {
  if (pending_.empty()) return;
  if (client_) client_->post_results(run_id_, pending_);
  posted_ += static_cast<int>(pending_.size());
  pending_.clear();
}

json ResultSink::finish(const std::string& status, const std::string& message) {
  flush();
  if (!client_) return json::object();
  json body = {{"status", status}, {"expected_results", posted_}};
  body["message"] = message.empty() ? json(nullptr) : json(message);
  return client_->complete(run_id_, body);
}

}  // namespace parbench
