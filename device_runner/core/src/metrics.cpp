#include "parbench/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>
#include <stdexcept>

#include "parbench/errors.h"

namespace parbench {

using nlohmann::json;

namespace {

json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }

// Indices of the k largest of x[begin + i*stride], i < n, best first; ties go to the lower
// index (numpy's argsort of -x leaves ties in an unspecified order; real logits rarely tie).
std::vector<int64_t> topk(const std::vector<double>& x, int64_t begin, int64_t n, int64_t k, int64_t stride = 1) {
  std::vector<int64_t> idx(static_cast<std::size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int64_t i, int64_t j) { return x[begin + i * stride] > x[begin + j * stride]; });
  idx.resize(static_cast<std::size_t>(std::min(k, n)));
  return idx;
}

// First index of the maximum, as numpy's argmax.
int64_t argmax(const std::vector<double>& x, int64_t begin, int64_t n, int64_t stride = 1) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (x[begin + i * stride] > x[begin + best * stride]) best = i;
  }
  return best;
}

void add_classification(json& out, const std::vector<double>& a, const std::vector<double>& r, int64_t rows,
                        int64_t cols) {
  int64_t agree = 0;
  double overlap = 0.0;
  const int64_t k = std::min<int64_t>(5, cols);
  for (int64_t row = 0; row < rows; ++row) {
    const auto ta = topk(a, row * cols, cols, k), tr = topk(r, row * cols, cols, k);
    if (ta[0] == tr[0]) ++agree;
    int64_t common = 0;
    for (int64_t i : ta) common += std::count(tr.begin(), tr.end(), i);
    overlap += static_cast<double>(common) / static_cast<double>(k);
  }
  out["top1_agree"] = static_cast<double>(agree) / static_cast<double>(rows);
  out["top5_overlap"] = overlap / static_cast<double>(rows);
}

void add_segmentation(json& out, const std::vector<double>& a, const std::vector<double>& r,
                      const std::vector<int64_t>& shape) {
  const int64_t n = shape[0], c = shape[1], hw = shape[2] * shape[3];
  std::vector<int64_t> ma(static_cast<std::size_t>(n * hw)), mr(ma.size());
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t p = 0; p < hw; ++p) {
      ma[b * hw + p] = argmax(a, b * c * hw + p, c, hw);
      mr[b * hw + p] = argmax(r, b * c * hw + p, c, hw);
    }
  }
  int64_t same = 0;
  std::set<int64_t> classes;
  for (std::size_t i = 0; i < ma.size(); ++i) {
    same += ma[i] == mr[i];
    classes.insert(ma[i]);
    classes.insert(mr[i]);
  }
  double iou_sum = 0.0;
  for (int64_t cls : classes) {
    int64_t inter = 0, uni = 0;
    for (std::size_t i = 0; i < ma.size(); ++i) {
      inter += (ma[i] == cls) && (mr[i] == cls);
      uni += (ma[i] == cls) || (mr[i] == cls);
    }
    iou_sum += static_cast<double>(inter) / static_cast<double>(uni);
  }
  const double pixels = static_cast<double>(ma.size());
  out["pixel_accuracy"] = pixels ? static_cast<double>(same) / pixels : std::nan("");
  out["mean_iou"] = number_or_null(classes.empty() ? std::nan("") : iou_sum / static_cast<double>(classes.size()));
}

void add_detection(json& out, const std::vector<double>& a, const std::vector<double>& r,
                   const std::vector<int64_t>& shape) {
  const int64_t classes = shape.back();
  const int64_t anchors = shape_numel(shape) / classes;
  int64_t same = 0;
  for (int64_t i = 0; i < anchors; ++i) same += argmax(a, i * classes, classes) == argmax(r, i * classes, classes);
  out["class_agree"] = number_or_null(static_cast<double>(same) / static_cast<double>(anchors));
}

}  // namespace

json output_metrics(const std::vector<double>& a, const std::vector<double>& r, const std::vector<int64_t>& shape,
                    const std::string& task) {
  if (a.size() != r.size()) {
    throw std::invalid_argument("candidate has " + std::to_string(a.size()) + " elements, reference " +
                                std::to_string(r.size()));
  }
  const std::size_t n = a.size();
  double max_abs = 0.0, sum_abs = 0.0, err2 = 0.0, ref2 = 0.0, cand2 = 0.0, dot = 0.0;
  double r_min = std::numeric_limits<double>::infinity(), r_max = -std::numeric_limits<double>::infinity();
  bool nan_seen = false;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = a[i] - r[i];
    const double ad = std::fabs(d);
    nan_seen |= std::isnan(ad);
    max_abs = std::max(max_abs, ad);
    sum_abs += ad;
    err2 += d * d;
    ref2 += r[i] * r[i];
    cand2 += a[i] * a[i];
    dot += a[i] * r[i];
    r_min = std::min(r_min, r[i]);
    r_max = std::max(r_max, r[i]);
  }
  if (nan_seen) max_abs = std::numeric_limits<double>::quiet_NaN();
  const double norm_r = std::sqrt(ref2), norm_a = std::sqrt(cand2);
  double cosine;
  if (norm_a == 0.0 && norm_r == 0.0) {
    cosine = 1.0;
  } else if (norm_a == 0.0 || norm_r == 0.0) {
    cosine = 0.0;
  } else {
    cosine = dot / (norm_a * norm_r);
  }
  const double mse = err2 / static_cast<double>(std::max<std::size_t>(n, 1));

  json out = json::object();
  out["max_abs"] = number_or_null(n ? max_abs : 0.0);
  out["mean_abs"] = number_or_null(n ? sum_abs / static_cast<double>(n) : 0.0);
  out["rel_l2"] = number_or_null(std::sqrt(err2) / std::max(norm_r, 1e-12));
  out["cosine"] = number_or_null(cosine);
  out["snr_db"] = number_or_null(err2 == 0.0 ? kDbCap : std::min(kDbCap, 10.0 * std::log10(std::max(ref2, 1e-300) / err2)));
  if (task == "image-to-image") {
    double peak = n ? r_max - r_min : 0.0;
    if (!(peak > 0.0)) peak = 1.0;
    out["psnr_db"] =
        number_or_null(mse == 0.0 ? kDbCap : std::min(kDbCap, 20.0 * std::log10(peak) - 10.0 * std::log10(mse)));
  }
  if (n == 0) return out;
  if (task == "classification" && shape.size() == 2 && shape[1] > 1) {
    add_classification(out, a, r, shape[0], shape[1]);
  } else if (task == "segmentation" && shape.size() == 4 && shape[1] > 1) {
    add_segmentation(out, a, r, shape);
  } else if (task == "detection" && shape.size() == 3 && shape[2] > 4) {
    add_detection(out, a, r, shape);
  }
  return out;
}

json compare_tensors(const Tensor& candidate, const Tensor& golden, const std::string& task) {
  if (candidate.shape != golden.shape) {
    throw RunnerError("shape mismatch: candidate " + shape_str(candidate.shape) + ", golden " +
                      shape_str(golden.shape));
  }
  const std::vector<double> a = candidate.to_double();
  const auto bad = std::count_if(a.begin(), a.end(), [](double v) { return !std::isfinite(v); });
  if (bad) {
    throw RunnerError(std::to_string(bad) + " of " + std::to_string(a.size()) + " candidate values are NaN/inf");
  }
  return output_metrics(a, golden.to_double(), golden.shape, task);
}

}  // namespace parbench
