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

// One axis' resampling as a sparse matrix, row by row: output i is the sum over k in
// [start[i], start[i + 1]) of weight[k] * input[index[k]]. resampling() builds kernels.interp_matrix
// (half-pixel centres; bilinear clamped at the borders, or nearest); transposed() is its adjoint,
// so backward runs the same two loops as forward, gathering instead of scattering.
template <typename Dtype>
struct SparseAxis {
  static SparseAxis resampling(int size_in, int size_out, bool bilinear);
  SparseAxis transposed() const;
  int size_in, size_out;
  bool identity;  // equal sizes: the axis is kept as it is
  std::vector<int> start, index;
  std::vector<Dtype> weight;
};

// Resample one (rows.size_in, cols.size_in) plane to (rows.size_out, cols.size_out): along each
// row with `cols`, then across rows with `rows`. `scratch` holds rows.size_in x cols.size_out.
// The adjoint of a resampling by (rows, cols) is resample_plane_adjoint by their transposes.
template <typename Dtype>
void resample_plane(const SparseAxis<Dtype>& rows, const SparseAxis<Dtype>& cols, const Dtype* in,
                    Dtype* scratch, Dtype* out);
template <typename Dtype>
void resample_plane_adjoint(const SparseAxis<Dtype>& rows_t, const SparseAxis<Dtype>& cols_t,
                            const Dtype* in, Dtype* scratch, Dtype* out);

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
  // Resample the kept channels of `from`'s planes (data `in`) into a blob of `channels_to`
  // channels (`out`), zeroing the rest; adjoint: the same from the top's gradient to the bottom's.
  void resize_channels(const caffe::Blob<Dtype>& from, int channels_to, const Dtype* in, Dtype* out,
                       bool adjoint);

  Config config_;
  std::vector<SparseAxis<Dtype> > axes_;  // rows, cols, and their transposes (4-D bottoms only)
  std::vector<Dtype> scratch_;
};

}  // namespace dropin_caffe

#endif  // DROPIN_CAFFE_NATIVE_RESIZE_LAYER_HPP_
