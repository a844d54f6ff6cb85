// Resize as a native Caffe layer, type "DropInResize" (many Caffe forks already register
// "Resize"): the same layer as dropin_caffe.layers.Resize, reading the same param_str.
//
//   layer { name: "resize1" type: "DropInResize" bottom: "pool1" top: "pool1_resized"
//     python_param { param_str: '{"channels": 50, "height": 8, "width": 8}' } }
//
// - bottoms: the blob, (N, C) or (N, C, H, W); optionally a second blob whose C, H, W are the
//   target (like Crop). Otherwise "channels", "height", "width" in param_str, each optional.
// - Extra channels are zeros, surplus channels dropped; H and W resampled by "interp":
//   "bilinear" (default; half-pixel centres, clamped at the borders) or "nearest".
// - Same in TRAIN and TEST; backward is the exact adjoint of forward.
#ifndef DROPIN_CAFFE_NATIVE_RESIZE_LAYER_HPP_
#define DROPIN_CAFFE_NATIVE_RESIZE_LAYER_HPP_

#include <vector>

#include "caffe/layer.hpp"

#include "params.hpp"

namespace dropin_caffe {

// One axis' resampling: output i = weight_left[i] x[left[i]] + weight_right[i] x[right[i]],
// the sparse form of kernels.interp_matrix (identity when the size is kept).
template <typename Dtype>
struct AxisResampling {
  AxisResampling(int size_in, int size_out, bool bilinear);
  int size_in, size_out;
  bool identity;
  std::vector<int> left, right;
  std::vector<Dtype> weight_left, weight_right;
};

// Resample one (rows_in, cols_in) plane to (rows, cols): columns first, then rows; `scratch`
// holds rows_in x cols.
template <typename Dtype>
void resize_plane_forward(const AxisResampling<Dtype>& rows, const AxisResampling<Dtype>& cols,
                          const Dtype* in, Dtype* scratch, Dtype* out);

// The adjoint of resize_plane_forward: `in_diff` (rows_in x cols_in) is overwritten.
template <typename Dtype>
void resize_plane_backward(const AxisResampling<Dtype>& rows, const AxisResampling<Dtype>& cols,
                           const Dtype* out_diff, Dtype* scratch, Dtype* in_diff);

template <typename Dtype>
class DropInResizeLayer : public caffe::Layer<Dtype> {
 public:
  explicit DropInResizeLayer(const caffe::LayerParameter& param) : caffe::Layer<Dtype>(param) {}
  virtual void LayerSetUp(const std::vector<caffe::Blob<Dtype>*>& bottom,
                          const std::vector<caffe::Blob<Dtype>*>& top);
  virtual void Reshape(const std::vector<caffe::Blob<Dtype>*>& bottom,
                       const std::vector<caffe::Blob<Dtype>*>& top);
  virtual inline const char* type() const { return "DropInResize"; }

 protected:
  virtual void Forward_cpu(const std::vector<caffe::Blob<Dtype>*>& bottom,
                           const std::vector<caffe::Blob<Dtype>*>& top);
  virtual void Backward_cpu(const std::vector<caffe::Blob<Dtype>*>& top,
                            const std::vector<bool>& propagate_down,
                            const std::vector<caffe::Blob<Dtype>*>& bottom);

 private:
  Config config_;
  std::vector<AxisResampling<Dtype> > axes_;  // rows, cols (4-D bottoms only)
  std::vector<Dtype> scratch_;
};

}  // namespace dropin_caffe

#endif  // DROPIN_CAFFE_NATIVE_RESIZE_LAYER_HPP_
