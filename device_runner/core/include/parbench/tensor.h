// Raw tensors as the fixture format stores them: little-endian, C order, no header.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace parbench {

enum class DType { Float32, Float16, Int64, Int32, UInt8, Bool };

// Parses a manifest dtype name ("float32", ...); throws FixtureError for anything else.
DType parse_dtype(const std::string& name);
const char* dtype_name(DType dtype);
std::size_t dtype_size(DType dtype);

struct Tensor {
  DType dtype = DType::Float32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;  // numel() * dtype_size(dtype) bytes

  int64_t numel() const;
  // Every element widened to double (float16 decoded, bool as 0/1).
  std::vector<double> to_double() const;
};

// Ordered (name, tensor) pairs: model inputs in argument order, outputs in flattened order.
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

int64_t shape_numel(const std::vector<int64_t>& shape);
std::string shape_str(const std::vector<int64_t>& shape);

// IEEE 754 binary16 -> binary32.
float half_to_float(uint16_t h);

// Reads a raw tensor file and checks its size against dtype and shape (FixtureError if not).
Tensor read_tensor_file(const std::string& path, DType dtype, const std::vector<int64_t>& shape);
void write_tensor_file(const std::string& path, const Tensor& tensor);

}  // namespace parbench
