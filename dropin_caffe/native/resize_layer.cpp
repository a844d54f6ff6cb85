#include "resize_layer.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "caffe/util/math_functions.hpp"

namespace dropin_caffe {

template <typename Dtype>
SparseAxis<Dtype> SparseAxis<Dtype>::resampling(int size_in, int size_out, bool bilinear) {
  SparseAxis axis;
  axis.size_in = size_in;
  axis.size_out = size_out;
  axis.identity = size_in == size_out;
  axis.start.push_back(0);
  for (int i = 0; i < size_out; ++i) {
    const double centre = (i + 0.5) * size_in / size_out;  // in input pixels, half-pixel centres
    int left = std::min(static_cast<int>(std::floor(centre)), size_in - 1), right = left;
    double to_right = 0.0;
    if (bilinear) {
      const double x = std::min(std::max(centre - 0.5, 0.0), size_in - 1.0);
      left = static_cast<int>(std::floor(x));
      right = std::min(left + 1, size_in - 1);
      to_right = x - left;
    }
    if (left == right || to_right == 0.0) {  // one input (weights summed, as interp_matrix does)
      axis.index.push_back(left);
      axis.weight.push_back(static_cast<Dtype>(left == right ? 1.0 : 1.0 - to_right));
    } else {
      axis.index.push_back(left);
      axis.weight.push_back(static_cast<Dtype>(1.0 - to_right));
      axis.index.push_back(right);
      axis.weight.push_back(static_cast<Dtype>(to_right));
    }
    axis.start.push_back(axis.index.size());
  }
  return axis;
}

template <typename Dtype>
SparseAxis<Dtype> SparseAxis<Dtype>::transposed() const {
  SparseAxis t;
  t.size_in = size_out;
  t.size_out = size_in;
  t.identity = identity;
  t.start.assign(size_in + 1, 0);
  for (int input : index) ++t.start[input + 1];
  for (int i = 0; i < size_in; ++i) t.start[i + 1] += t.start[i];
  t.index.resize(index.size());
  t.weight.resize(weight.size());
  std::vector<int> next(t.start.begin(), t.start.end() - 1);
  for (int i = 0; i < size_out; ++i) {
    for (int k = start[i]; k < start[i + 1]; ++k) {
      const int at = next[index[k]]++;
      t.index[at] = i;
      t.weight[at] = weight[k];
    }
  }
  return t;
}

namespace {

// Each of `rows` rows of `in` (axis.size_in wide) resampled into `out` (axis.size_out wide).
template <typename Dtype>
void resample_along_rows(const SparseAxis<Dtype>& axis, int rows, const Dtype* __restrict__ in,
                         Dtype* __restrict__ out) {
  const int* __restrict__ start = axis.start.data();
  const int* __restrict__ index = axis.index.data();
  const Dtype* __restrict__ weight = axis.weight.data();
  for (int r = 0; r < rows; ++r) {
    const Dtype* x = in + r * axis.size_in;
    Dtype* y = out + r * axis.size_out;
    for (int i = 0; i < axis.size_out; ++i) {
      Dtype sum = 0;
      for (int k = start[i]; k < start[i + 1]; ++k) sum += weight[k] * x[index[k]];
      y[i] = sum;
    }
  }
}

// Whole rows of `in` (axis.size_in of them, `width` wide) combined into axis.size_out rows.
template <typename Dtype>
void resample_across_rows(const SparseAxis<Dtype>& axis, int width, const Dtype* __restrict__ in,
                          Dtype* __restrict__ out) {
  for (int i = 0; i < axis.size_out; ++i) {
    Dtype* __restrict__ y = out + i * width;
    if (axis.start[i] == axis.start[i + 1]) caffe::caffe_set(width, Dtype(0), y);
    for (int k = axis.start[i]; k < axis.start[i + 1]; ++k) {
      const Dtype* __restrict__ x = in + axis.index[k] * width;
      const Dtype w = axis.weight[k];
      if (k == axis.start[i]) {
        for (int j = 0; j < width; ++j) y[j] = w * x[j];
      } else {
        for (int j = 0; j < width; ++j) y[j] += w * x[j];
      }
    }
  }
}

}  // namespace

template <typename Dtype>
void resample_plane(const SparseAxis<Dtype>& rows, const SparseAxis<Dtype>& cols, const Dtype* in,
                    Dtype* scratch, Dtype* out) {
  const Dtype* source = in;
  if (!cols.identity) {
    resample_along_rows(cols, rows.size_in, in, scratch);
    source = scratch;
  }
  if (!rows.identity) {
    resample_across_rows(rows, cols.size_out, source, out);
  } else {
    caffe::caffe_copy(rows.size_out * cols.size_out, source, out);
  }
}

template <typename Dtype>
void resample_plane_adjoint(const SparseAxis<Dtype>& rows_t, const SparseAxis<Dtype>& cols_t,
                            const Dtype* in, Dtype* scratch, Dtype* out) {
  const Dtype* source = in;
  if (!rows_t.identity) {  // forward applied the rows last: its adjoint applies them first
    resample_across_rows(rows_t, cols_t.size_in, in, scratch);
    source = scratch;
  }
  if (!cols_t.identity) {
    resample_along_rows(cols_t, rows_t.size_out, source, out);
  } else {
    caffe::caffe_copy(rows_t.size_out * cols_t.size_out, source, out);
  }
}

template <typename Dtype>
void DropInResizeLayer<Dtype>::LayerSetUp(const std::vector<caffe::Blob<Dtype>*>& bottom,
                                          const std::vector<caffe::Blob<Dtype>*>& top) {
  const Rules rules = {
      {"name", text_rule()},
      {"channels", integer_rule(1)},
      {"height", integer_rule(1)},
      {"width", integer_rule(1)},
      {"interp", choice_rule({"bilinear", "nearest"})},
  };
  // Messages say "Resize", as the Python layer's do: one specification, two implementations.
  config_ = parse_param_str("Resize", this->layer_param_.python_param().param_str(), rules,
                            Json{{"interp", "bilinear"}});
  if (bottom.size() != 1 && bottom.size() != 2)
    fail(config_.label + ": takes 1 or 2 bottoms (the blob, and optionally a blob of the target shape), got "
         + std::to_string(bottom.size()));
  if (top.size() != 1) fail(config_.label + ": takes 1 tops, got " + std::to_string(top.size()));
  std::string given;
  for (const char* key : {"channels", "height", "width"})
    if (config_.has(key)) given += (given.empty() ? "" : ", ") + std::string(key);
  if (bottom.size() == 2 && !given.empty())
    fail(config_.label + ": the target comes from the second bottom, so param_str must not also give "
         + given + "; remove one of them");
}

template <typename Dtype>
void DropInResizeLayer<Dtype>::Reshape(const std::vector<caffe::Blob<Dtype>*>& bottom,
                                       const std::vector<caffe::Blob<Dtype>*>& top) {
  const std::vector<int> shape = bottom[0]->shape();
  if (shape.size() != 2 && shape.size() != 4)
    fail(config_.label + ": resizes (N, C) or (N, C, H, W) blobs, got shape " + shape_text(shape));
  std::vector<int> target = shape;
  if (bottom.size() == 2) {
    const std::vector<int> other = bottom[1]->shape();
    if (other.size() != shape.size())
      fail(config_.label + ": the second bottom must have as many axes as the first, got "
           + shape_text(other) + " and " + shape_text(shape));
    std::copy(other.begin() + 1, other.end(), target.begin() + 1);
  } else {
    if (shape.size() == 2 && (config_.has("height") || config_.has("width")))
      fail(config_.label + ": \"height\" and \"width\" need a 4-D bottom, got shape " + shape_text(shape));
    const char* keys[3] = {"channels", "height", "width"};
    for (size_t axis = 1; axis < shape.size(); ++axis)
      if (config_.has(keys[axis - 1])) target[axis] = config_.values[keys[axis - 1]].get<int>();
  }
  top[0]->Reshape(target);
  axes_.clear();
  if (shape.size() == 4) {
    const bool bilinear = config_.values["interp"] == "bilinear";
    axes_.push_back(SparseAxis<Dtype>::resampling(shape[2], target[2], bilinear));
    axes_.push_back(SparseAxis<Dtype>::resampling(shape[3], target[3], bilinear));
    axes_.push_back(axes_[0].transposed());
    axes_.push_back(axes_[1].transposed());
    scratch_.resize(shape[2] * target[3]);  // rows in x columns out, both ways
  }
}

template <typename Dtype>
void DropInResizeLayer<Dtype>::Forward_cpu(const std::vector<caffe::Blob<Dtype>*>& bottom,
                                           const std::vector<caffe::Blob<Dtype>*>& top) {
  resize_channels(*bottom[0], top[0]->shape(1), bottom[0]->cpu_data(), top[0]->mutable_cpu_data(), false);
}

template <typename Dtype>
void DropInResizeLayer<Dtype>::Backward_cpu(const std::vector<caffe::Blob<Dtype>*>& top,
                                            const std::vector<bool>& propagate_down,
                                            const std::vector<caffe::Blob<Dtype>*>& bottom) {
  if (bottom.size() == 2 && propagate_down[1])
    caffe::caffe_set(bottom[1]->count(), Dtype(0), bottom[1]->mutable_cpu_diff());
  if (propagate_down[0])
    resize_channels(*top[0], bottom[0]->shape(1), top[0]->cpu_diff(), bottom[0]->mutable_cpu_diff(), true);
}

template <typename Dtype>
void DropInResizeLayer<Dtype>::resize_channels(const caffe::Blob<Dtype>& from, int channels_to,
                                               const Dtype* in, Dtype* out, bool adjoint) {
  const int num = from.shape(0), channels_from = from.shape(1), kept = std::min(channels_from, channels_to);
  const int plane_in = from.count(2);  // 1 for 2-D blobs
  const int plane_out = axes_.empty() ? 1 : adjoint ? axes_[0].size_in * axes_[1].size_in
                                                     : axes_[0].size_out * axes_[1].size_out;
  for (int n = 0; n < num; ++n) {
    for (int c = 0; c < kept; ++c) {
      const Dtype* x = in + (n * channels_from + c) * plane_in;
      Dtype* y = out + (n * channels_to + c) * plane_out;
      if (axes_.empty()) {
        *y = *x;
      } else if (adjoint) {
        resample_plane_adjoint(axes_[2], axes_[3], x, scratch_.data(), y);
      } else {
        resample_plane(axes_[0], axes_[1], x, scratch_.data(), y);
      }
    }
    // forward: the extra channels are zeros; backward: the dropped ones get no gradient
    caffe::caffe_set((channels_to - kept) * plane_out, Dtype(0), out + (n * channels_to + kept) * plane_out);
  }
}

#define RESIZE_INSTANTIATE(Dtype)                                                                      \
  template struct SparseAxis<Dtype>;                                                                   \
  template void resample_plane<Dtype>(const SparseAxis<Dtype>&, const SparseAxis<Dtype>&, const Dtype*, \
                                      Dtype*, Dtype*);                                                 \
  template void resample_plane_adjoint<Dtype>(const SparseAxis<Dtype>&, const SparseAxis<Dtype>&,       \
                                              const Dtype*, Dtype*, Dtype*);                           \
  template class DropInResizeLayer<Dtype>;
RESIZE_INSTANTIATE(float)
RESIZE_INSTANTIATE(double)

}  // namespace dropin_caffe
