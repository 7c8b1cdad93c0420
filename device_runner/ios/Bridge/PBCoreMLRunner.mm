#import "PBCoreMLRunner.h"

#import <CoreML/CoreML.h>
#import <CoreVideo/CoreVideo.h>
#import <Foundation/Foundation.h>
#import <SSZipArchive/SSZipArchive.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <type_traits>

#include "parbench/errors.h"
#include "parbench/sha256.h"

namespace parbench {

namespace {

using nlohmann::json;

std::string describe(NSError* error) {
  return error ? std::string(error.localizedDescription.UTF8String) : std::string("unknown error");
}

NSString* ns(const std::string& s) { return [NSString stringWithUTF8String:s.c_str()]; }

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

// Unpacked and compiled packages, shared by the runners of one registry: an artifact is
// unzipped and compiled once however many cases and compute units use it. Cases come in plan
// order (one artifact after another), so only the latest artifact is kept; its folders go when
// the next artifact comes and when the registry goes.
class CompiledModels {
 public:
  CompiledModels() {
    root_ = [NSTemporaryDirectory() stringByAppendingPathComponent:@"parbench-coreml"];
    [NSFileManager.defaultManager removeItemAtPath:root_ error:nil];  // left by an interrupted run
    [NSFileManager.defaultManager createDirectoryAtPath:root_ withIntermediateDirectories:YES attributes:nil error:nil];
  }
  ~CompiledModels() {
    evict();
    [NSFileManager.defaultManager removeItemAtPath:root_ error:nil];
  }

  // The .mlpackage of an artifact: unzipped (and checked against the manifest) when zipped.
  NSString* package_for(const LocalFile& f) {
    if (f.path != key_) {
      evict();
      key_ = f.path;
    }
    if (package_ != nil) return package_;
    NSString* path = ns(f.path);
    if ([path.pathExtension isEqualToString:@"zip"]) {
      unzip_dir_ = [root_ stringByAppendingPathComponent:NSUUID.UUID.UUIDString];
      if (![SSZipArchive unzipFileAtPath:path toDestination:unzip_dir_]) {
        throw RunnerError("cannot unzip " + f.path + " (a damaged download? delete the fixture cache and rerun)");
      }
      path = find_package(unzip_dir_);
      if (path == nil) throw RunnerError(f.path + " holds no .mlpackage");
      if (f.zipped_folder) {
        const std::string got = sha256_tree(path.UTF8String);
        if (got != f.folder_sha256) throw HashMismatch(f.path + " (unzipped)", f.folder_sha256, got);
      }
    }
    package_ = path;
    return package_;
  }

  // The compiled .mlmodelc of an artifact; compiled_now says whether this call compiled it.
  NSURL* compiled_for(const LocalFile& f, bool& compiled_now) {
    NSString* package = package_for(f);
    compiled_now = false;
    if (compiled_ != nil) return compiled_;
    // The completion handler runs on Core ML's own queue, so waiting here cannot deadlock.
    dispatch_semaphore_t done = dispatch_semaphore_create(0);
    __block NSURL* compiled = nil;
    __block NSError* failure = nil;
    [MLModel compileModelAtURL:[NSURL fileURLWithPath:package]
             completionHandler:^(NSURL* url, NSError* error) {
               compiled = url;
               failure = error;
               dispatch_semaphore_signal(done);
             }];
    dispatch_semaphore_wait(done, DISPATCH_TIME_FOREVER);
    if (compiled == nil) throw RunnerError("Core ML could not compile " + f.path + ": " + describe(failure));
    compiled_ = compiled;
    compiled_now = true;
    return compiled_;
  }

 private:
  void evict() {
    NSFileManager* files = NSFileManager.defaultManager;
    if (compiled_ != nil) [files removeItemAtURL:compiled_ error:nil];
    if (unzip_dir_ != nil) [files removeItemAtPath:unzip_dir_ error:nil];
    compiled_ = nil;
    unzip_dir_ = nil;
    package_ = nil;
    key_.clear();
  }

  NSString* root_ = nil;
  std::string key_;
  NSString* package_ = nil;
  NSString* unzip_dir_ = nil;
  NSURL* compiled_ = nil;
};

void release_pixel_buffer(CVPixelBufferRef pb) {
  if (pb != NULL) CVPixelBufferRelease(pb);
}
using PixelBuffer = std::unique_ptr<std::remove_pointer_t<CVPixelBufferRef>, decltype(&release_pixel_buffer)>;

class CoreMLRunner : public ModelRunner {
 public:
  CoreMLRunner(const RunnerOptions& opts, std::shared_ptr<CompiledModels> cache)
      : opts_(opts), cache_(std::move(cache)) {}
  std::string executor() const override { return "coreml"; }

  // Unzipping and hashing happen here, outside the compile clock.
  void prepare(const LocalFile& f) override { cache_->package_for(f); }

  bool compile(const LocalFile& f) override {
    bool compiled_now = false;
    compiled_ = cache_->compiled_for(f, compiled_now);
    compile_reused_ = !compiled_now;
    return compiled_now;
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
    NSDictionary<NSString*, MLFeatureDescription*>* wanted = model_.modelDescription.inputDescriptionsByName;
    NSMutableDictionary<NSString*, MLFeatureValue*>* features = [NSMutableDictionary dictionary];
    for (const auto& [name, t] : inputs) {
      NSString* feature = ns(feature_name(name));
      MLFeatureDescription* desc = wanted[feature];
      if (desc == nil) {
        throw RunnerError("the Core ML model has no input '" + std::string(feature.UTF8String) +
                          "'; its inputs: " + [[wanted.allKeys componentsJoinedByString:@", "] UTF8String]);
      }
      if (desc.type == MLFeatureTypeImage) {
        features[feature] = image_value(name, t, desc.imageConstraint);
      } else if (desc.type == MLFeatureTypeMultiArray) {
        features[feature] = array_value(name, t);
      } else {
        throw RunnerError("input '" + name + "': parbench feeds Core ML multi-arrays and images, not feature type " +
                          std::to_string(static_cast<long>(desc.type)));
      }
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

  // parbench's Core ML export names the outputs as parbench does (output, output_0, keys). A
  // classifier exported with classifier mode "identity" keeps the model's output only in the
  // probabilities dictionary: it is rebuilt in the model's label order.
  NamedTensors outputs() override {
    NamedTensors out;
    const std::string rebuilt = rebuilt_output();
    for (const auto& name : opts_.output_names) {
      if (name == rebuilt) {
        out.emplace_back(name, from_probabilities());
        continue;
      }
      MLFeatureValue* v = [last_ featureValueForName:ns(name)];
      if (v == nil || v.multiArrayValue == nil) {
        throw RunnerError("the Core ML model has no multi-array output named '" + name + "'; it returned: " +
                          [[last_.featureNames.allObjects componentsJoinedByString:@", "] UTF8String]);
      }
      out.emplace_back(name, to_tensor(v.multiArrayValue));
    }
    return out;
  }

  json details() const override {
    json d = {{"compile_reused", compile_reused_}};
    if (!image_inputs_.empty()) d["image_inputs"] = image_inputs_;
    return d;
  }

 private:
  const json& meta() const { return opts_.artifact_meta; }

  // The package's name for a fixture input: the image form renames its one input.
  std::string feature_name(const std::string& fixture_name) const {
    if (meta().contains("image_input") && meta().contains("inputs") && meta()["inputs"].is_array() &&
        !meta()["inputs"].empty() && meta()["inputs"][0] == fixture_name) {
      return meta()["image_input"].get<std::string>();
    }
    return fixture_name;
  }

  std::string rebuilt_output() const {
    if (!meta().contains("classifier") || !meta()["classifier"].is_object()) return "";
    const json& c = meta()["classifier"];
    if (c.value("mode", "") != "identity" || !c.contains("output") || !c["output"].is_string()) return "";
    return c["output"].get<std::string>();
  }

  static MLFeatureValue* array_value(const std::string& name, const Tensor& t) {
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
    if (buffer == nullptr) throw RunnerError("input '" + name + "': out of memory");
    std::memcpy(buffer, t.data.data(), t.data.size());
    NSError* error = nil;
    MLMultiArray* array = [[MLMultiArray alloc] initWithDataPointer:buffer
                                                              shape:shape
                                                           dataType:type
                                                            strides:strides
                                                        deallocator:^(void* p) { std::free(p); }
                                                              error:&error];
    if (array == nil) throw RunnerError("input '" + name + "': " + describe(error));
    return [MLFeatureValue featureValueWithMultiArray:array];
  }

  // An image input gets the 8-bit RGB picture behind the fixture's normalized tensor, in a
  // pixel buffer, as an app hands it to Core ML (parbench/backends/coreml_image.py does the same
  // on the host with a PIL image).
  MLFeatureValue* image_value(const std::string& name, const Tensor& t, MLImageConstraint* constraint) {
    const OSType format = constraint.pixelFormatType;
    if (format != kCVPixelFormatType_32BGRA && format != kCVPixelFormatType_32ARGB) {
      throw RunnerError("input '" + name + "': the model wants pixel format " + std::to_string(format) +
                        "; parbench feeds RGB images (32BGRA or 32ARGB) only");
    }
    if (t.dtype != DType::Float32 || t.shape.size() != 4 || t.shape[0] != 1 || t.shape[1] != 3) {
      throw RunnerError("input '" + name + "' has shape " + shape_str(t.shape) + " " + dtype_name(t.dtype) +
                        "; an image input takes one float32 RGB image [1, 3, H, W]");
    }
    if (!meta().contains("mean") || !meta().contains("std") || meta()["mean"].size() != 3 || meta()["std"].size() != 3) {
      throw RunnerError("input '" + name + "' is an image, but the manifest's artifact meta has no 3-value mean and "
                        "std to turn the fixture back into pixels; rebuild the fixture set with this parbench");
    }
    const auto h = static_cast<std::size_t>(t.shape[2]);
    const auto w = static_cast<std::size_t>(t.shape[3]);
    CVPixelBufferRef raw = NULL;
    const CVReturn made = CVPixelBufferCreate(kCFAllocatorDefault, w, h, format, NULL, &raw);
    PixelBuffer pb(raw, &release_pixel_buffer);
    if (made != kCVReturnSuccess || raw == NULL) {
      throw RunnerError("input '" + name + "': CVPixelBufferCreate failed (" + std::to_string(made) + ")");
    }
    const float* x = reinterpret_cast<const float*>(t.data.data());
    const std::size_t plane = h * w;
    double worst = 0.0;
    CVPixelBufferLockBaseAddress(raw, 0);
    auto* base = static_cast<uint8_t*>(CVPixelBufferGetBaseAddress(raw));
    const std::size_t row_bytes = CVPixelBufferGetBytesPerRow(raw);
    // byte offsets of R, G, B and alpha within a pixel
    const int r_at = format == kCVPixelFormatType_32BGRA ? 2 : 1;
    const int g_at = format == kCVPixelFormatType_32BGRA ? 1 : 2;
    const int b_at = format == kCVPixelFormatType_32BGRA ? 0 : 3;
    const int a_at = format == kCVPixelFormatType_32BGRA ? 3 : 0;
    for (std::size_t y = 0; y < h; ++y) {
      uint8_t* row = base + y * row_bytes;
      for (std::size_t xi = 0; xi < w; ++xi) {
        uint8_t* px = row + 4 * xi;
        const int at[3] = {r_at, g_at, b_at};
        for (int c = 0; c < 3; ++c) {
          const double v = (static_cast<double>(x[c * plane + y * w + xi]) * meta()["std"][c].get<double>() +
                            meta()["mean"][c].get<double>()) * 255.0;
          const double r = std::nearbyint(v);
          worst = std::max(worst, std::isfinite(v) ? std::fabs(v - r) : 1e9);
          px[at[c]] = static_cast<uint8_t>(std::min(255.0, std::max(0.0, r)));
          if (r < 0 || r > 255) worst = 1e9;
        }
        px[a_at] = 255;
      }
    }
    CVPixelBufferUnlockBaseAddress(raw, 0);
    if (worst > 1e-3) {
      throw RunnerError("input '" + name + "' is not an 8-bit RGB image normalized with the artifact's mean and "
                        "std (values up to " + std::to_string(worst) + " off the pixel grid); image inputs need "
                        "fixtures made from 8-bit images");
    }
    image_inputs_[name] = {{"width", w}, {"height", h}, {"pixel_format", format == kCVPixelFormatType_32BGRA ? "32BGRA" : "32ARGB"}};
    return [MLFeatureValue featureValueWithPixelBuffer:raw];
  }

  // [1, C] float32 from the classifier's probabilities dictionary, in the model's label order.
  Tensor from_probabilities() {
    NSString* probs_name = model_.modelDescription.predictedProbabilitiesName;
    NSArray* labels = model_.modelDescription.classLabels;
    MLFeatureValue* v = probs_name ? [last_ featureValueForName:probs_name] : nil;
    NSDictionary* probs = v.dictionaryValue;  // label -> probability
    if (probs == nil || labels.count == 0) {
      throw RunnerError("the Core ML classifier returned no probabilities dictionary with class labels; re-export it");
    }
    Tensor t;
    t.dtype = DType::Float32;
    t.shape = {1, static_cast<int64_t>(labels.count)};
    t.data.resize(labels.count * 4);
    float* dst = reinterpret_cast<float*>(t.data.data());
    for (NSUInteger i = 0; i < labels.count; ++i) {
      NSNumber* p = probs[labels[i]];
      if (p == nil) throw RunnerError("the probabilities lack label '" + std::string([labels[i] description].UTF8String) + "'");
      dst[i] = p.floatValue;
    }
    return t;
  }

  // Copies a (possibly strided, possibly IOSurface-backed) MLMultiArray into a contiguous
  // float32 tensor, reading it through getBytesWithHandler: (locked access).
  static Tensor to_tensor(MLMultiArray* a) {
    Tensor t;
    t.dtype = DType::Float32;
    for (NSNumber* d in a.shape) t.shape.push_back(d.longLongValue);
    const int64_t n = t.numel();
    t.data.resize(static_cast<std::size_t>(n) * 4);
    std::vector<int64_t> strides;
    for (NSNumber* s in a.strides) strides.push_back(s.longLongValue);
    const MLMultiArrayDataType type = a.dataType;
    std::size_t item = 0;
    switch (type) {
      case MLMultiArrayDataTypeFloat32: item = 4; break;
      case MLMultiArrayDataTypeDouble: item = 8; break;
      case MLMultiArrayDataTypeInt32: item = 4; break;
      case MLMultiArrayDataTypeFloat16: item = 2; break;
      default: throw RunnerError("unsupported Core ML output data type " + std::to_string(static_cast<long>(type)));
    }
    Tensor* out = &t;
    const std::vector<int64_t>* st = &strides;
    __block std::string problem;
    [a getBytesWithHandler:^(const void* bytes, NSInteger size) {
      const std::size_t rank = out->shape.size();
      std::vector<int64_t> index(rank, 0);
      float* dst = reinterpret_cast<float*>(out->data.data());
      const uint8_t* base = static_cast<const uint8_t*>(bytes);
      for (int64_t i = 0; i < n; ++i) {
        int64_t offset = 0;
        for (std::size_t k = 0; k < rank; ++k) offset += index[k] * (*st)[k];
        if (offset < 0 || static_cast<std::size_t>(offset + 1) * item > static_cast<std::size_t>(size)) {
          problem = "an output's strides point outside its buffer";
          return;
        }
        switch (type) {
          case MLMultiArrayDataTypeFloat32: dst[i] = reinterpret_cast<const float*>(base)[offset]; break;
          case MLMultiArrayDataTypeDouble: dst[i] = static_cast<float>(reinterpret_cast<const double*>(base)[offset]); break;
          case MLMultiArrayDataTypeInt32: dst[i] = static_cast<float>(reinterpret_cast<const int32_t*>(base)[offset]); break;
          default: dst[i] = half_to_float(reinterpret_cast<const uint16_t*>(base)[offset]); break;
        }
        for (std::size_t k = rank; k-- > 0;) {  // next index, last dimension fastest
          if (++index[k] < out->shape[k]) break;
          index[k] = 0;
        }
      }
    }];
    if (!problem.empty()) throw RunnerError(problem);
    return t;
  }

  RunnerOptions opts_;
  std::shared_ptr<CompiledModels> cache_;
  NSURL* compiled_ = nil;
  bool compile_reused_ = false;
  MLModel* model_ = nil;
  MLDictionaryFeatureProvider* inputs_ = nil;
  id<MLFeatureProvider> last_ = nil;
  json image_inputs_ = json::object();
};

}  // namespace

const std::vector<std::string>& coreml_compute_units() {
  static const std::vector<std::string> units = {"cpuOnly", "cpuAndGPU", "cpuAndNeuralEngine", "all"};
  return units;
}

void register_coreml_runner(RunnerRegistry& registry) {
  auto cache = std::make_shared<CompiledModels>();
  registry.add("mlpackage", {[cache](const RunnerOptions& o) { return std::make_unique<CoreMLRunner>(o, cache); },
                             coreml_compute_units()});
}

}  // namespace parbench
