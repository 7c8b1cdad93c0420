// Parity metrics, computed in double precision on flattened arrays exactly as parbench's host
// side computes them (parbench/compare.py: generic_metrics, output_metrics), a = candidate,
// r = reference (golden):
//   max_abs, mean_abs, rel_l2 = ||a-r|| / max(||r||, 1e-12), cosine (1 if both norms are 0,
//   0 if one is), snr_db = 10 log10(max(sum r^2, 1e-300) / sum (a-r)^2) capped at 200 dB;
//   psnr_db (image-to-image only) = 20 log10(peak) - 10 log10(mse), peak = max(r) - min(r)
//   (1 if 0), capped at 200 dB;
//   classification logits [N, C>1]: top1_agree, top5_overlap (k = min(5, C));
//   segmentation scores [N, C>1, H, W]: pixel_accuracy, mean_iou of the argmax masks;
//   detection logits [N, anchors, classes>4]: class_agree.
// Values that are not finite become null (JSON has no NaN).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "parbench/tensor.h"

namespace parbench {

constexpr double kDbCap = 200.0;

// Metrics over two equally long arrays of the given (reference) shape and task.
// Throws std::invalid_argument on a length mismatch.
nlohmann::json output_metrics(const std::vector<double>& a, const std::vector<double>& r,
                              const std::vector<int64_t>& shape, const std::string& task);

// Candidate vs golden tensor: RunnerError for a shape mismatch (naming both shapes) or for
// NaN/inf candidate values (counting them); otherwise output_metrics.
nlohmann::json compare_tensors(const Tensor& candidate, const Tensor& golden, const std::string& task);

}  // namespace parbench
