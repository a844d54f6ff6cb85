// DropIn as a native Caffe layer, type "DropIn": the same layer as dropin_caffe.layers.DropIn
// (Smith, Hand & Doster 2015, "Gradual DropIn of Layers"), reading the same param_str from
// python_param and keeping the same two-float counter, so snapshots load into either:
//
//   layer { name: "dropin3" type: "DropIn"
//     bottom: "conv3" bottom: "conv3_1" top: "dropin3" top: "dropin3_p"
//     loss_weight: 0 loss_weight: 0
//     param { lr_mult: 0 decay_mult: 0 }
//     python_param { param_str: '{"name": "dropin3", "length": 1000}' } }
//
// - bottoms: prev, new (same shape); tops: the joined blob, optionally p of shape (1,).
// - TRAIN: p = min(1, max(0, (count / iter_size - start) / length)) (regularize: p_new); the
//   counter counts TRAIN forward passes. 0 < p < 1 picks each unit from `new` with probability p
//   (a bit-packed mask, drawn on the fly); p = 0 / 1 copies prev / new. Backward routes each
//   unit's gradient to the input it came from. Masks come from Caffe's RNG (so the solver's
//   random_seed reproduces a run), or with "seed" from the seed and the counter.
// - TEST: "expectation" p new + (1 - p) prev, "new", or "prev".
// - blobs_[0]: the counter as two whole floats, count = high * 2^22 + low (exact past 2^24).
#ifndef DROPIN_CAFFE_NATIVE_DROPIN_LAYER_HPP_
#define DROPIN_CAFFE_NATIVE_DROPIN_LAYER_HPP_

#include <cstdint>
#include <vector>

#include "caffe/layer.hpp"

#include "params.hpp"

namespace dropin_caffe {

// The per-unit loops, apart from the layer. A mask word holds 64 units, bit j = unit j from new.

// Draw the mask for pass `key` (each unit from new with probability 0 < p_new < 1) and select:
// top = mask ? new : prev, bit-exact. `mask` gets ceil(count / 64) words.
template <typename Dtype>
void dropin_select_forward(int count, const Dtype* prev, const Dtype* next, double p_new,
                           uint64_t key, uint64_t* mask, Dtype* top);

// new_diff = mask ? top_diff : 0, prev_diff = mask ? 0 : top_diff; either may be null (skipped).
template <typename Dtype>
void dropin_select_backward(int count, const Dtype* top_diff, const uint64_t* mask,
                            Dtype* prev_diff, Dtype* new_diff);

// top = p new + (1 - p) prev; p = 0 or 1 copies exactly.
template <typename Dtype>
void dropin_blend_forward(int count, const Dtype* prev, const Dtype* next, double p, Dtype* top);

// The adjoint of dropin_blend_forward; either output may be null (skipped).
template <typename Dtype>
void dropin_blend_backward(int count, const Dtype* top_diff, double p, Dtype* prev_diff,
                           Dtype* new_diff);

template <typename Dtype>
class DropInLayer : public caffe::Layer<Dtype> {
 public:
  explicit DropInLayer(const caffe::LayerParameter& param) : caffe::Layer<Dtype>(param) {}
  virtual void LayerSetUp(const std::vector<caffe::Blob<Dtype>*>& bottom,
                          const std::vector<caffe::Blob<Dtype>*>& top);
  virtual void Reshape(const std::vector<caffe::Blob<Dtype>*>& bottom,
                       const std::vector<caffe::Blob<Dtype>*>& top);
  virtual inline const char* type() const { return "DropIn"; }

 protected:
  virtual void Forward_cpu(const std::vector<caffe::Blob<Dtype>*>& bottom,
                           const std::vector<caffe::Blob<Dtype>*>& top);
  virtual void Backward_cpu(const std::vector<caffe::Blob<Dtype>*>& top,
                            const std::vector<bool>& propagate_down,
                            const std::vector<caffe::Blob<Dtype>*>& bottom);

 private:
  uint64_t forward_count() const;  // read afresh: the solver may re-point the TEST net's blob
  void set_forward_count(uint64_t count);
  double p_new_at(uint64_t count) const;
  uint64_t mask_key(uint64_t count) const;

  Config config_;
  bool seeded_;
  uint64_t seed_;
  std::vector<uint64_t> mask_;
  bool drew_mask_;             // the last forward drew a mask (else it blended with p_used_)
  double p_used_;
};

}  // namespace dropin_caffe

#endif  // DROPIN_CAFFE_NATIVE_DROPIN_LAYER_HPP_
