#include "parbench/libtorch_runner.h"

#include <cstring>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <torch/csrc/jit/mobile/import.h>
#include <torch/csrc/jit/mobile/module.h>
#if !defined(PARBENCH_LITE_ONLY)
#include <torch/script.h>
#endif
#if __has_include(<torch/version.h>)
#include <torch/version.h>
#endif
#ifndef TORCH_VERSION
#define TORCH_VERSION "unknown"
#endif

#include "parbench/errors.h"

namespace parbench {

namespace {

at::ScalarType to_scalar_type(DType d) {
  switch (d) {
    case DType::Float32: return at::kFloat;
    case DType::Float16: return at::kHalf;
    case DType::Int64: return at::kLong;
    case DType::Int32: return at::kInt;
    case DType::UInt8: return at::kByte;
    case DType::Bool: return at::kBool;
  }
  return at::kFloat;
}

Tensor from_torch(const at::Tensor& t_in) {
  at::Tensor t = t_in.detach().cpu();
  Tensor out;
  switch (t.scalar_type()) {
    case at::kFloat: out.dtype = DType::Float32; break;
    case at::kHalf: out.dtype = DType::Float16; break;
    case at::kLong: out.dtype = DType::Int64; break;
    case at::kInt: out.dtype = DType::Int32; break;
    case at::kByte: out.dtype = DType::UInt8; break;
    case at::kBool: out.dtype = DType::Bool; break;
    default:  // double, bfloat16, quantized dequantized...: compare as float32
      t = (t.is_quantized() ? t.dequantize() : t).to(at::kFloat);
      out.dtype = DType::Float32;
  }
  t = t.contiguous();
  out.shape.assign(t.sizes().begin(), t.sizes().end());
  out.data.resize(static_cast<std::size_t>(t.numel()) * dtype_size(out.dtype));
  if (!out.data.empty()) std::memcpy(out.data.data(), t.data_ptr(), out.data.size());
  return out;
}

// Flattens an output the way parbench names outputs: a tensor is "output", a tuple or list
// "output_0", "output_1", ..., a dict keeps its keys (nested: "parent.key"), nesting appends.
void flatten(const c10::IValue& v, const std::string& name, bool top, NamedTensors& out) {
  if (v.isTensor()) {
    out.emplace_back(name, from_torch(v.toTensor()));
  } else if (v.isTuple()) {
    const auto& items = v.toTupleRef().elements();
    for (std::size_t i = 0; i < items.size(); ++i) flatten(items[i], name + "_" + std::to_string(i), false, out);
  } else if (v.isList()) {
    const auto list = v.toList();
    for (std::size_t i = 0; i < list.size(); ++i) flatten(list.get(i), name + "_" + std::to_string(i), false, out);
  } else if (v.isGenericDict()) {
    for (const auto& item : v.toGenericDict()) {
      const std::string key = item.key().isString() ? item.key().toStringRef() : item.key().tagKind();
      flatten(item.value(), top ? key : name + "." + key, false, out);
    }
  } else {
    throw RunnerError("model output '" + name + "' is a " + v.tagKind() +
                      "; parbench compares tensors, tuples/lists of tensors and dicts of tensors");
  }
}

class LibTorchRunnerBase : public ModelRunner {
 public:
  explicit LibTorchRunnerBase(const RunnerOptions& opts) {
    if (opts.threads > 0) at::set_num_threads(opts.threads);
  }
  void set_inputs(const NamedTensors& inputs) override {
    inputs_.clear();
    for (const auto& [name, t] : inputs) {
      // from_blob does not copy; clone so the runtime owns its input memory.
      auto ten = at::from_blob(const_cast<uint8_t*>(t.data.data()), t.shape,
                               at::TensorOptions().dtype(to_scalar_type(t.dtype)))
                     .clone();
      inputs_.emplace_back(std::move(ten));
    }
  }
  NamedTensors outputs() override {
    NamedTensors out;
    flatten(last_, "output", true, out);
    return out;
  }

 protected:
  std::vector<c10::IValue> inputs_;
  c10::IValue last_;
};

class LiteRunner : public LibTorchRunnerBase {
 public:
  using LibTorchRunnerBase::LibTorchRunnerBase;
  std::string executor() const override { return "lite_interpreter"; }
  void load(const LocalFile& f) override {
    try {
      module_ = std::make_unique<torch::jit::mobile::Module>(torch::jit::_load_for_mobile(f.path));
    } catch (const c10::Error& e) {
      throw RunnerError("the lite interpreter could not load " + f.path + ": " + e.what_without_backtrace());
    }
  }
  void run() override {
    c10::InferenceMode guard;
    try {
      last_ = module_->forward(inputs_);
    } catch (const c10::Error& e) {
      throw RunnerError(std::string("forward failed: ") + e.what_without_backtrace());
    }
  }

 private:
  std::unique_ptr<torch::jit::mobile::Module> module_;
};

#if !defined(PARBENCH_LITE_ONLY)
class JitRunner : public LibTorchRunnerBase {
 public:
  using LibTorchRunnerBase::LibTorchRunnerBase;
  std::string executor() const override { return "libtorch_jit"; }
  void load(const LocalFile& f) override {
    try {
      module_ = std::make_unique<torch::jit::Module>(torch::jit::load(f.path));
      module_->eval();
    } catch (const c10::Error& e) {
      throw RunnerError("torch::jit::load could not load " + f.path + ": " + e.what_without_backtrace());
    }
  }
  void run() override {
    c10::InferenceMode guard;
    try {
      last_ = module_->forward(inputs_);
    } catch (const c10::Error& e) {
      throw RunnerError(std::string("forward failed: ") + e.what_without_backtrace());
    }
  }

 private:
  std::unique_ptr<torch::jit::Module> module_;
};
#endif

}  // namespace

void register_libtorch_runners(RunnerRegistry& registry) {
  registry.add("ptl", {[](const RunnerOptions& o) { return std::make_unique<LiteRunner>(o); }, {}});
#if !defined(PARBENCH_LITE_ONLY)
  registry.add("pt", {[](const RunnerOptions& o) { return std::make_unique<JitRunner>(o); }, {}});
#endif
}

// The LibTorch-Lite pod's headers have no <torch/version.h> on the include path; the iOS build
// passes the pod's version as PARBENCH_LIBTORCH_VERSION (a bare 2.1.0, stringified here).
#define PARBENCH_STR2(x) #x
#define PARBENCH_STR(x) PARBENCH_STR2(x)

std::string libtorch_version() {
#if defined(PARBENCH_LIBTORCH_VERSION)
  return PARBENCH_STR(PARBENCH_LIBTORCH_VERSION);
#else
  return TORCH_VERSION;
#endif
}

}  // namespace parbench
