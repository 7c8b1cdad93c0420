#import "PBExecuTorchRunner.h"

#if defined(PARBENCH_WITH_EXECUTORCH)

#include <cstring>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor.h>

#include "PBExecuTorchThreadpool.h"
#include "parbench/errors.h"

#define PARBENCH_STR2(x) #x
#define PARBENCH_STR(x) PARBENCH_STR2(x)

namespace parbench {

namespace {

namespace et = executorch;
using et::aten::ScalarType;
using et::extension::Module;
using et::runtime::EValue;

ScalarType scalar_type(DType d) {
  switch (d) {
    case DType::Float32: return ScalarType::Float;
    case DType::Float16: return ScalarType::Half;
    case DType::Int64: return ScalarType::Long;
    case DType::Int32: return ScalarType::Int;
    case DType::UInt8: return ScalarType::Byte;
    case DType::Bool: return ScalarType::Bool;
  }
  return ScalarType::Float;
}

std::string code(et::runtime::Error e) { return "ExecuTorch error " + std::to_string(static_cast<int>(e)); }

// XNNPACK and the optimized kernels run on ExecuTorch's one process-wide threadpool. Its size
// is set before a program is loaded (no program is alive then: each case's runner is gone before
// the next is made), and only when it differs, since resetting drops the pool's threads.
std::size_t use_threads(int wanted) {
  namespace tp = ::executorch::extension::threadpool;
  tp::ThreadPool* pool = tp::get_threadpool();
  if (pool == nullptr) return 0;
  if (wanted > 0 && pool->get_thread_count() != static_cast<std::size_t>(wanted)) {
#if defined(PARBENCH_ET_THREADPOOL_HEADER)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wdeprecated-declarations"
#endif
    if (!pool->_unsafe_reset_threadpool(static_cast<uint32_t>(wanted))) {
      throw RunnerError("ExecuTorch could not resize its threadpool to " + std::to_string(wanted) + " threads");
    }
#if defined(PARBENCH_ET_THREADPOOL_HEADER)
#pragma clang diagnostic pop
#endif
  }
  return pool->get_thread_count();
}

class ExecuTorchRunner : public ModelRunner {
 public:
  explicit ExecuTorchRunner(const RunnerOptions& opts) : opts_(opts), threads_(use_threads(opts.threads)) {}
  std::string executor() const override { return "executorch"; }

  nlohmann::json details() const override {
    return {{"threadpool_threads", threads_}, {"executorch", executorch_version()}};
  }

  void load(const LocalFile& f) override {
    module_ = std::make_unique<Module>(f.path, Module::LoadMode::Mmap);
    const auto err = module_->load_method("forward");
    if (err != et::runtime::Error::Ok) {
      throw RunnerError("ExecuTorch could not load 'forward' of " + f.path + " (" + code(err) +
                        "; an unregistered backend or kernel means the app was linked without -force_load)");
    }
  }

  void set_inputs(const NamedTensors& inputs) override {
    tensors_.clear();
    values_.clear();
    for (const auto& [name, t] : inputs) {
      std::vector<et::aten::SizesType> sizes(t.shape.begin(), t.shape.end());
      std::vector<uint8_t> bytes = t.data;  // the tensor keeps its own copy
      tensors_.push_back(et::extension::make_tensor_ptr(std::move(sizes), std::move(bytes), {}, {},
                                                         scalar_type(t.dtype)));
    }
    for (const auto& tp : tensors_) values_.emplace_back(*tp);  // the TensorPtr keeps the storage alive
  }

  void run() override {
    auto result = module_->forward(values_);
    if (!result.ok()) throw RunnerError("ExecuTorch forward failed (" + code(result.error()) + ")");
    last_ = std::move(*result);
  }

  // Outputs come back positionally; the manifest gives them parbench's names.
  NamedTensors outputs() override {
    NamedTensors out;
    for (std::size_t i = 0; i < last_.size(); ++i) {
      if (!last_[i].isTensor()) throw RunnerError("ExecuTorch output " + std::to_string(i) + " is not a tensor");
      const auto& src = last_[i].toTensor();
      Tensor t;
      switch (src.scalar_type()) {
        case ScalarType::Float: t.dtype = DType::Float32; break;
        case ScalarType::Half: t.dtype = DType::Float16; break;
        case ScalarType::Long: t.dtype = DType::Int64; break;
        case ScalarType::Int: t.dtype = DType::Int32; break;
        case ScalarType::Byte: t.dtype = DType::UInt8; break;
        case ScalarType::Bool: t.dtype = DType::Bool; break;
        default: throw RunnerError("ExecuTorch output " + std::to_string(i) + " has an unsupported dtype");
      }
      for (auto d : src.sizes()) t.shape.push_back(d);
      t.data.resize(src.nbytes());
      std::memcpy(t.data.data(), src.const_data_ptr(), src.nbytes());
      std::string name = i < opts_.output_names.size() ? opts_.output_names[i]
                         : last_.size() == 1          ? "output"
                                                      : "output_" + std::to_string(i);
      out.emplace_back(name, std::move(t));
    }
    return out;
  }

 private:
  RunnerOptions opts_;
  std::size_t threads_;
  std::unique_ptr<Module> module_;
  std::vector<et::extension::TensorPtr> tensors_;
  std::vector<EValue> values_;
  std::vector<EValue> last_;
};

}  // namespace

void register_executorch_runner(RunnerRegistry& registry) {
  registry.add("pte", {[](const RunnerOptions& o) { return std::make_unique<ExecuTorchRunner>(o); }, {}});
}

std::string executorch_version() {
#if defined(PARBENCH_EXECUTORCH_VERSION)
  return PARBENCH_STR(PARBENCH_EXECUTORCH_VERSION);
#else
  return "unknown";
#endif
}

}  // namespace parbench

#else

namespace parbench {
void register_executorch_runner(RunnerRegistry&) {}  // built without ExecuTorch: .pte cases report no runner
std::string executorch_version() { return ""; }
}  // namespace parbench

#endif
