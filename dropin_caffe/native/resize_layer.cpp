#include "resize_layer.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "caffe/util/math_functions.hpp"

namespace dropin_caffe {

template <typename Dtype>
AxisResampling<Dtype>::AxisResampling(int size_in, int size_out, bool bilinear)
    : size_in(size_in), size_out(size_out), identity(size_in == size_out), left(size_out), right(size_out),
      weight_left(size_out), weight_right(size_out) {
  for (int i = 0; i < size_out; ++i) {
    const double centre = (i + 0.5) * size_in / size_out;  // in input pixels, half-pixel centres
    if (bilinear) {
      const double x = std::min(std::max(centre - 0.5, 0.0), size_in - 1.0);
      left[i] = static_cast<int>(std::floor(x));
      right[i] = std::min(left[i] + 1, size_in - 1);
      weight_left[i] = static_cast<Dtype>(1.0 - (x - left[i]));
      weight_right[i] = static_cast<Dtype>(x - left[i]);
    } else {
      left[i] = right[i] = std::min(static_cast<int>(std::floor(centre)), size_in - 1);
      weight_left[i] = 1;
      weight_right[i] = 0;
    }
  }
}

template <typename Dtype>
void resize_plane_forward(const AxisResampling<Dtype>& rows, const AxisResampling<Dtype>& cols,
                          const Dtype* in, Dtype* scratch, Dtype* out) {
  const int height_in = rows.size_in, height_out = rows.size_out;
  const int width_in = cols.size_in, width_out = cols.size_out;
  const Dtype* source = in;
  if (!cols.identity) {
    for (int r = 0; r < height_in; ++r) {
      const Dtype* row = in + r * width_in;
      Dtype* to = scratch + r * width_out;
      for (int j = 0; j < width_out; ++j)
        to[j] = cols.weight_left[j] * row[cols.left[j]] + cols.weight_right[j] * row[cols.right[j]];
    }
    source = scratch;
  }
  if (rows.identity) {
    if (source != out) caffe::caffe_copy(height_out * width_out, source, out);
    return;
  }
  for (int i = 0; i < height_out; ++i) {
    const Dtype* a = source + rows.left[i] * width_out;
    const Dtype* b = source + rows.right[i] * width_out;
    const Dtype wa = rows.weight_left[i], wb = rows.weight_right[i];
    Dtype* to = out + i * width_out;
    for (int j = 0; j < width_out; ++j) to[j] = wa * a[j] + wb * b[j];
  }
}

template <typename Dtype>
void resize_plane_backward(const AxisResampling<Dtype>& rows, const AxisResampling<Dtype>& cols,
                           const Dtype* out_diff, Dtype* scratch, Dtype* in_diff) {
  const int height_in = rows.size_in, height_out = rows.size_out;
  const int width_in = cols.size_in, width_out = cols.size_out;
  // Rows' adjoint first (forward applied them last): scatter each output row into two inputs.
  const Dtype* source = out_diff;
  Dtype* rows_done = cols.identity ? in_diff : scratch;
  if (!rows.identity) {
    caffe::caffe_set(height_in * width_out, Dtype(0), rows_done);
    for (int i = 0; i < height_out; ++i) {
      Dtype* a = rows_done + rows.left[i] * width_out;
      Dtype* b = rows_done + rows.right[i] * width_out;
      const Dtype wa = rows.weight_left[i], wb = rows.weight_right[i];
      const Dtype* from = out_diff + i * width_out;
      for (int j = 0; j < width_out; ++j) {
        a[j] += wa * from[j];
        b[j] += wb * from[j];
      }
    }
    source = rows_done;
  } else if (cols.identity) {
    caffe::caffe_copy(height_out * width_out, out_diff, in_diff);
    return;
  }
  if (cols.identity) return;
  caffe::caffe_set(height_in * width_in, Dtype(0), in_diff);
  for (int r = 0; r < height_in; ++r) {
    const Dtype* from = source + r * width_out;
    Dtype* row = in_diff + r * width_in;
    for (int j = 0; j < width_out; ++j) {
      row[cols.left[j]] += cols.weight_left[j] * from[j];
      row[cols.right[j]] += cols.weight_right[j] * from[j];
    }
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
    axes_.push_back(AxisResampling<Dtype>(shape[2], target[2], bilinear));
    axes_.push_back(AxisResampling<Dtype>(shape[3], target[3], bilinear));
    scratch_.resize(std::max(shape[2], target[2]) * std::max(shape[3], target[3]));
  }
}

template <typename Dtype>
void DropInResizeLayer<Dtype>::Forward_cpu(const std::vector<caffe::Blob<Dtype>*>& bottom,
                                           const std::vector<caffe::Blob<Dtype>*>& top) {
  const caffe::Blob<Dtype>& in = *bottom[0];
  caffe::Blob<Dtype>& out = *top[0];
  const int kept = std::min(in.shape(1), out.shape(1));
  const int plane_in = in.count(2), plane_out = out.count(2);  // 1 for 2-D blobs
  caffe::caffe_set(out.count(), Dtype(0), out.mutable_cpu_data());  // the extra channels
  const Dtype* in_data = in.cpu_data();
  Dtype* out_data = out.mutable_cpu_data();
  for (int n = 0; n < in.shape(0); ++n) {
    for (int c = 0; c < kept; ++c) {
      const Dtype* from = in_data + (n * in.shape(1) + c) * plane_in;
      Dtype* to = out_data + (n * out.shape(1) + c) * plane_out;
      if (axes_.empty()) {
        *to = *from;
      } else {
        resize_plane_forward(axes_[0], axes_[1], from, scratch_.data(), to);
      }
    }
  }
}

template <typename Dtype>
void DropInResizeLayer<Dtype>::Backward_cpu(const std::vector<caffe::Blob<Dtype>*>& top,
                                            const std::vector<bool>& propagate_down,
                                            const std::vector<caffe::Blob<Dtype>*>& bottom) {
  if (bottom.size() == 2 && propagate_down[1])
    caffe::caffe_set(bottom[1]->count(), Dtype(0), bottom[1]->mutable_cpu_diff());
  if (!propagate_down[0]) return;
  const caffe::Blob<Dtype>& out = *top[0];
  caffe::Blob<Dtype>& in = *bottom[0];
  const int kept = std::min(in.shape(1), out.shape(1));
  const int plane_in = in.count(2), plane_out = out.count(2);
  caffe::caffe_set(in.count(), Dtype(0), in.mutable_cpu_diff());  // the dropped channels
  const Dtype* out_diff = out.cpu_diff();
  Dtype* in_diff = in.mutable_cpu_diff();
  for (int n = 0; n < in.shape(0); ++n) {
    for (int c = 0; c < kept; ++c) {
      const Dtype* from = out_diff + (n * out.shape(1) + c) * plane_out;
      Dtype* to = in_diff + (n * in.shape(1) + c) * plane_in;
      if (axes_.empty()) {
        *to = *from;
      } else {
        resize_plane_backward(axes_[0], axes_[1], from, scratch_.data(), to);
      }
    }
  }
}

#define RESIZE_INSTANTIATE(Dtype)                                                               \
  template struct AxisResampling<Dtype>;                                                        \
  template void resize_plane_forward<Dtype>(const AxisResampling<Dtype>&,                       \
                                            const AxisResampling<Dtype>&, const Dtype*, Dtype*, Dtype*); \
  template void resize_plane_backward<Dtype>(const AxisResampling<Dtype>&,                      \
                                             const AxisResampling<Dtype>&, const Dtype*, Dtype*, Dtype*); \
  template class DropInResizeLayer<Dtype>;
RESIZE_INSTANTIATE(float)
RESIZE_INSTANTIATE(double)

}  // namespace dropin_caffe
