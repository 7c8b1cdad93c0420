#import "PBCoreMLRunner.h"

#import <CoreML/CoreML.h>
#import <Foundation/Foundation.h>
#import <SSZipArchive/SSZipArchive.h>

#include <cstring>

#include "parbench/errors.h"
#include "parbench/sha256.h"

namespace parbench {

namespace {

std::string describe(NSError* error) {
  return error ? std::string(error.localizedDescription.UTF8String) : std::string("unknown error");
}

MLComputeUnits units_from(const std::string& name) {
  if (name == "cpuOnly") return MLComputeUnitsCPUOnly;
  if (name == "cpuAndGPU") return MLComputeUnitsCPUAndGPU;
  if (name == "cpuAndNeuralEngine") return MLComputeUnitsCPUAndNeuralEngine;
  if (name == "all") return MLComputeUnitsAll;
  throw RunnerError("unknown compute units '" + name + "'");
}

// The .mlpackage folder inside an unzipped archive.
NSString* find_package(NSString* dir) {
  NSDirectoryEnumerator* it = [NSFileManager.defaultManager enumeratorAtPath:dir];
  for (NSString* rel in it) {
    if ([rel.pathExtension isEqualToString:@"mlpackage"]) return [dir stringByAppendingPathComponent:rel];
  }
  return nil;
}

class CoreMLRunner : public ModelRunner {
 public:
  explicit CoreMLRunner(const RunnerOptions& opts) : opts_(opts) {}
  std::string executor() const override { return "coreml"; }

  // Unpacks (when zipped) and compiles the package to .mlmodelc: reported as compile_ms.
  bool compile(const LocalFile& f) override {
    NSString* path = [NSString stringWithUTF8String:f.path.c_str()];
    if ([path.pathExtension isEqualToString:@"zip"]) {
      NSString* dest = [NSTemporaryDirectory() stringByAppendingPathComponent:NSUUID.UUID.UUIDString];
      if (![SSZipArchive unzipFileAtPath:path toDestination:dest]) throw RunnerError("cannot unzip " + f.path);
      path = find_package(dest);
      if (path == nil) throw RunnerError(f.path + " holds no .mlpackage");
      if (f.zipped_folder) {
        const std::string got = sha256_tree(path.UTF8String);
        if (got != f.folder_sha256) throw HashMismatch(f.path + " (unzipped)", f.folder_sha256, got);
      }
    }
    NSError* error = nil;
    compiled_ = [MLModel compileModelAtURL:[NSURL fileURLWithPath:path] error:&error];
    if (compiled_ == nil) throw RunnerError("Core ML could not compile " + f.path + ": " + describe(error));
    return true;
  }

  void load(const LocalFile& f) override {
    if (compiled_ == nil) compile(f);
    MLModelConfiguration* config = [[MLModelConfiguration alloc] init];
    config.computeUnits = units_from(opts_.compute_units);
    NSError* error = nil;
    model_ = [MLModel modelWithContentsOfURL:compiled_ configuration:config error:&error];
    if (model_ == nil) throw RunnerError("Core ML could not load " + f.path + ": " + describe(error));
  }

  void set_inputs(const NamedTensors& inputs) override {
    NSMutableDictionary<NSString*, MLFeatureValue*>* features = [NSMutableDictionary dictionary];
    for (const auto& [name, t] : inputs) {
      MLMultiArrayDataType type;
      switch (t.dtype) {
        case DType::Float32: type = MLMultiArrayDataTypeFloat32; break;
        case DType::Float16: type = MLMultiArrayDataTypeFloat16; break;
        case DType::Int32: type = MLMultiArrayDataTypeInt32; break;
        default: throw RunnerError("input '" + name + "': Core ML takes float32, float16 or int32, not " + dtype_name(t.dtype));
      }
      NSMutableArray<NSNumber*>* shape = [NSMutableArray array];
      NSMutableArray<NSNumber*>* strides = [NSMutableArray array];
      int64_t stride = 1;
      for (auto it = t.shape.rbegin(); it != t.shape.rend(); ++it) {
        [shape insertObject:@(*it) atIndex:0];
        [strides insertObject:@(stride) atIndex:0];
        stride *= *it;
      }
      void* buffer = std::malloc(t.data.size());
      std::memcpy(buffer, t.data.data(), t.data.size());
      NSError* error = nil;
      MLMultiArray* array = [[MLMultiArray alloc] initWithDataPointer:buffer
                                                                shape:shape
                                                             dataType:type
                                                              strides:strides
                                                          deallocator:^(void* p) { std::free(p); }
                                                                error:&error];
      if (array == nil) throw RunnerError("input '" + name + "': " + describe(error));
      features[[NSString stringWithUTF8String:name.c_str()]] = [MLFeatureValue featureValueWithMultiArray:array];
    }
    NSError* error = nil;
    inputs_ = [[MLDictionaryFeatureProvider alloc] initWithDictionary:features error:&error];
    if (inputs_ == nil) throw RunnerError("Core ML inputs: " + describe(error));
  }

  void run() override {
    NSError* error = nil;
    id<MLFeatureProvider> out = [model_ predictionFromFeatures:inputs_ error:&error];
    if (out == nil) throw RunnerError("Core ML prediction failed: " + describe(error));
    last_ = out;
  }

  // parbench's Core ML export names the outputs as parbench does (output, output_0, keys).
  NamedTensors outputs() override {
    NamedTensors out;
    for (const auto& name : opts_.output_names) {
      MLFeatureValue* v = [last_ featureValueForName:[NSString stringWithUTF8String:name.c_str()]];
      if (v == nil || v.multiArrayValue == nil) {
        throw RunnerError("the Core ML model has no multi-array output named '" + name + "'");
      }
      out.emplace_back(name, to_tensor(v.multiArrayValue));
    }
    return out;
  }

 private:
  // Copies a (possibly strided) MLMultiArray into a contiguous float32 tensor.
  static Tensor to_tensor(MLMultiArray* a) {
    Tensor t;
    t.dtype = DType::Float32;
    for (NSNumber* d in a.shape) t.shape.push_back(d.longLongValue);
    const int64_t n = t.numel();
    t.data.resize(static_cast<std::size_t>(n) * 4);
    std::vector<int64_t> strides;
    for (NSNumber* s in a.strides) strides.push_back(s.longLongValue);
    const std::size_t rank = t.shape.size();
    std::vector<int64_t> index(rank, 0);
    float* dst = reinterpret_cast<float*>(t.data.data());
    const uint8_t* base = static_cast<const uint8_t*>(a.dataPointer);
    for (int64_t i = 0; i < n; ++i) {
      int64_t offset = 0;
      for (std::size_t k = 0; k < rank; ++k) offset += index[k] * strides[k];
      switch (a.dataType) {
        case MLMultiArrayDataTypeFloat32: dst[i] = reinterpret_cast<const float*>(base)[offset]; break;
        case MLMultiArrayDataTypeDouble: dst[i] = static_cast<float>(reinterpret_cast<const double*>(base)[offset]); break;
        case MLMultiArrayDataTypeInt32: dst[i] = static_cast<float>(reinterpret_cast<const int32_t*>(base)[offset]); break;
        case MLMultiArrayDataTypeFloat16: dst[i] = half_to_float(reinterpret_cast<const uint16_t*>(base)[offset]); break;
        default: throw RunnerError("unsupported Core ML output data type");
      }
      for (std::size_t k = rank; k-- > 0;) {  // next index, last dimension fastest
        if (++index[k] < t.shape[k]) break;
        index[k] = 0;
      }
    }
    return t;
  }

  RunnerOptions opts_;
  NSURL* compiled_ = nil;
  MLModel* model_ = nil;
  MLDictionaryFeatureProvider* inputs_ = nil;
  id<MLFeatureProvider> last_ = nil;
};

}  // namespace

const std::vector<std::string>& coreml_compute_units() {
  static const std::vector<std::string> units = {"cpuOnly", "cpuAndGPU", "cpuAndNeuralEngine", "all"};
  return units;
}

void register_coreml_runner(RunnerRegistry& registry) {
  registry.add("mlpackage", {[](const RunnerOptions& o) { return std::make_unique<CoreMLRunner>(o); },
                             coreml_compute_units()});
}

}  // namespace parbench
