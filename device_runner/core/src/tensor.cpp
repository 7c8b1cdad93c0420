#include "parbench/tensor.h"

#include <cstring>
#include <fstream>
#include <sstream>

#include "parbench/errors.h"

namespace parbench {

namespace {
bool host_is_little_endian() {
  const uint16_t probe = 1;
  uint8_t first = 0;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}
}  // namespace

DType parse_dtype(const std::string& name) {
  if (name == "float32") return DType::Float32;
  if (name == "float16") return DType::Float16;
  if (name == "int64") return DType::Int64;
  if (name == "int32") return DType::Int32;
  if (name == "uint8") return DType::UInt8;
  if (name == "bool") return DType::Bool;
  throw FixtureError("unknown dtype '" + name + "': the fixture format allows float32 float16 int64 int32 uint8 bool");
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::Float32: return "float32";
    case DType::Float16: return "float16";
    case DType::Int64: return "int64";
    case DType::Int32: return "int32";
    case DType::UInt8: return "uint8";
    case DType::Bool: return "bool";
  }
  return "?";
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::Float32: return 4;
    case DType::Float16: return 2;
    case DType::Int64: return 8;
    case DType::Int32: return 4;
    case DType::UInt8: return 1;
    case DType::Bool: return 1;
  }
  return 0;
}

int64_t shape_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << "[";
  for (std::size_t i = 0; i < shape.size(); ++i) out << (i ? ", " : "") << shape[i];
  out << "]";
  return out.str();
}

int64_t Tensor::numel() const { return shape_numel(shape); }

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  uint32_t bits = 0;
  if (exponent == 0) {
    if (mantissa == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      int shift = 0;
      while ((mantissa & 0x400u) == 0) {
        mantissa <<= 1;
        ++shift;
      }
      mantissa &= 0x3FFu;
      bits = sign | (static_cast<uint32_t>(127 - 15 - shift + 1) << 23) | (mantissa << 13);
    }
  } else if (exponent == 0x1F) {  // inf / nan
    bits = sign | 0x7F800000u | (mantissa << 13);
  } else {
    bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
  }
  float out = 0.0f;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

std::vector<double> Tensor::to_double() const {
  const int64_t n = numel();
  std::vector<double> out(static_cast<std::size_t>(n));
  const uint8_t* p = data.data();
  for (int64_t i = 0; i < n; ++i) {
    switch (dtype) {
      case DType::Float32: {
        float v;
        std::memcpy(&v, p + i * 4, 4);
        out[i] = v;
        break;
      }
      case DType::Float16: {
        uint16_t v;
        std::memcpy(&v, p + i * 2, 2);
        out[i] = half_to_float(v);
        break;
      }
      case DType::Int64: {
        int64_t v;
        std::memcpy(&v, p + i * 8, 8);
        out[i] = static_cast<double>(v);
        break;
      }
      case DType::Int32: {
        int32_t v;
        std::memcpy(&v, p + i * 4, 4);
        out[i] = v;
        break;
      }
      case DType::UInt8: out[i] = p[i]; break;
      case DType::Bool: out[i] = p[i] ? 1.0 : 0.0; break;
    }
  }
  return out;
}

Tensor read_tensor_file(const std::string& path, DType dtype, const std::vector<int64_t>& shape) {
  if (!host_is_little_endian()) throw FixtureError("fixture tensors are little-endian; this host is not");
  for (int64_t d : shape) {
    if (d < 0) throw FixtureError(path + ": negative dimension in shape " + shape_str(shape));
  }
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw FixtureError("cannot open tensor file " + path);
  const auto size = static_cast<int64_t>(in.tellg());
  const int64_t expected = shape_numel(shape) * static_cast<int64_t>(dtype_size(dtype));
  if (size != expected) {
    throw FixtureError(path + " has " + std::to_string(size) + " bytes but " + dtype_name(dtype) + " " +
                       shape_str(shape) + " needs " + std::to_string(expected) +
                       ": the manifest and the file disagree; rebuild the fixture set");
  }
  Tensor t;
  t.dtype = dtype;
  t.shape = shape;
  t.data.resize(static_cast<std::size_t>(size));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(t.data.data()), size);
  if (!in) throw FixtureError("short read on " + path);
  return t;
}

void write_tensor_file(const std::string& path, const Tensor& tensor) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw FixtureError("cannot write " + path);
  out.write(reinterpret_cast<const char*>(tensor.data.data()), static_cast<std::streamsize>(tensor.data.size()));
  if (!out) throw FixtureError("short write on " + path);
}

}  // namespace parbench
