#include "dropin_layer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "caffe/util/math_functions.hpp"

namespace dropin_caffe {

namespace {

const double kLow = 4194304.0;  // 2^22: count = high * 2^22 + low
const uint64_t kGolden = 0x9e3779b97f4a7c15ULL;  // 2^64 / golden ratio, SplitMix64's step

// SplitMix64's output function, for deriving one pass's key from the seed and the counter.
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// Draw j of a pass: a counter-based generator (the wyrand construction: one 64x64 -> 128-bit
// multiply of a Weyl sequence), so any draw is computed on its own, in any order, with no state.
inline uint64_t draw(uint64_t key, uint64_t j) {
  const uint64_t x = key + j * 0xa0761d6478bd642fULL;
  const unsigned __int128 product = static_cast<unsigned __int128>(x) * (x ^ 0xe7037ed1a0b428dbULL);
  return static_cast<uint64_t>(product >> 64) ^ static_cast<uint64_t>(product);
}

// Bernoulli(p) from one random byte b per unit, exactly as kernels.sample_mask argues: with
// k = floor(256 p), a unit comes from new when b < k, or when b == k (1 unit in 256) and a
// second, 32-bit draw is below tie = (256 p - k) 2^32. So p is exact to 2^-40 at one multiply
// per 8 units.
struct Threshold {
  explicit Threshold(double p)
      : k(static_cast<int>(256.0 * p)), tie(static_cast<uint64_t>((256.0 * p - k) * 4294967296.0)) {}
  int k;         // 0 .. 255, as p < 1
  uint64_t tie;  // 0 when 256 p is whole: then b == k means prev
};

// The mask bits of units 64 w .. 64 w + 63; unit u of the word takes byte u of draws 8 w .. 8 w + 7.
inline uint64_t mask_word(uint64_t key, uint64_t tie_key, uint64_t w, const Threshold& threshold) {
  uint64_t raw[8];
  for (uint64_t j = 0; j < 8; ++j) raw[j] = draw(key, 8 * w + j);
  uint64_t below = 0, equal = 0;
#ifdef __SSE2__
  // Unsigned byte comparisons as signed ones, both sides shifted by 0x80; 16 units at a time.
  const __m128i flip = _mm_set1_epi8(static_cast<char>(0x80));
  const __m128i k = _mm_set1_epi8(static_cast<char>(threshold.k ^ 0x80));
  for (int q = 0; q < 4; ++q) {
    // from registers, not reloaded from `raw` (a wide load of two narrow stores stalls)
    const __m128i bytes = _mm_xor_si128(_mm_set_epi64x(raw[2 * q + 1], raw[2 * q]), flip);
    below |= static_cast<uint64_t>(static_cast<uint16_t>(_mm_movemask_epi8(_mm_cmplt_epi8(bytes, k)))) << (16 * q);
    equal |= static_cast<uint64_t>(static_cast<uint16_t>(_mm_movemask_epi8(_mm_cmpeq_epi8(bytes, k)))) << (16 * q);
  }
#else
  unsigned char bytes[64];
  std::memcpy(bytes, raw, sizeof bytes);
  for (int u = 0; u < 64; ++u) {
    below |= static_cast<uint64_t>(bytes[u] < threshold.k) << u;
    equal |= static_cast<uint64_t>(bytes[u] == threshold.k) << u;
  }
#endif
  if (threshold.tie == 0) return below;
  for (; equal; equal &= equal - 1) {  // the ties, one set bit at a time
    const int u = __builtin_ctzll(equal);
    if ((draw(tie_key, 64 * w + u) >> 32) < threshold.tie) below |= uint64_t(1) << u;
  }
  return below;
}

// A unit's bits as an unsigned integer, to select without branches (a random mask would
// mispredict half of them) and without float arithmetic (a copy stays bit-exact).
template <typename Dtype> struct UnitBits;
template <> struct UnitBits<float> { typedef uint32_t type; };
template <> struct UnitBits<double> { typedef uint64_t type; };

// out[j] = bit j of `word` ? b[j] : a[j] for N units. Each bit is tested against a table of
// single-bit words rather than shifted out, and N is a constant, so compilers unroll and
// vectorise the loop (no per-lane shifts, no trip-count or aliasing checks).
template <typename Dtype, int N>
inline void select_block(uint32_t word, int n, const Dtype* __restrict__ a, const Dtype* __restrict__ b,
                         Dtype* __restrict__ out) {
  typedef typename UnitBits<Dtype>::type U;
  static const struct SingleBits {
    uint32_t of[32];
    SingleBits() { for (int j = 0; j < 32; ++j) of[j] = 1u << j; }
  } single;
  for (int j = 0; j < (N ? N : n); ++j) {
    const U take_b = (word & single.of[j]) ? ~U(0) : U(0);
    U x, y;
    std::memcpy(&x, a + j, sizeof x);
    std::memcpy(&y, b + j, sizeof y);
    const U chosen = x ^ ((x ^ y) & take_b);
    std::memcpy(out + j, &chosen, sizeof chosen);
  }
}

// Blobs from this size on are written with non-temporal stores: a pass over them (3 blobs)
// overflows the last-level cache a core sees anyway, and streaming skips reading each output
// line before overwriting it, a third of the memory traffic. Smaller blobs stay in cache.
const size_t kStreamBytes = size_t(8) << 20;

template <typename Dtype>
bool streams(int count, const Dtype* out) {
#ifdef __SSE2__
  return sizeof(Dtype) == 4 && count * sizeof(Dtype) >= kStreamBytes && reinterpret_cast<uintptr_t>(out) % 16 == 0;
#else
  return false;
#endif
}

// select_block for 32 aligned float units, written around the cache.
inline void select_block_streamed(uint32_t word, const float* a, const float* b, float* out) {
#ifdef __SSE2__
  const __m128i single = _mm_set_epi32(8, 4, 2, 1);
  for (int j = 0; j < 32; j += 4) {
    const __m128 take_b = _mm_castsi128_ps(
        _mm_cmpeq_epi32(_mm_and_si128(_mm_set1_epi32(static_cast<int>(word >> j)), single), single));
    const __m128 chosen = _mm_or_ps(_mm_andnot_ps(take_b, _mm_loadu_ps(a + j)),
                                    _mm_and_ps(take_b, _mm_loadu_ps(b + j)));
    _mm_stream_ps(out + j, chosen);
  }
#else
  select_block<float, 32>(word, 32, a, b, out);
#endif
}
inline void select_block_streamed(uint32_t word, const double* a, const double* b, double* out) {
  select_block<double, 32>(word, 32, a, b, out);  // streams() is false for double
}

// out[j] = bit j of `bits` ? b[j] : a[j], for j < n <= 64.
template <typename Dtype>
inline void select_units(uint64_t bits, int n, const Dtype* a, const Dtype* b, Dtype* out, bool stream) {
  if (n == 64 && stream) {
    select_block_streamed(static_cast<uint32_t>(bits), a, b, out);
    select_block_streamed(static_cast<uint32_t>(bits >> 32), a + 32, b + 32, out + 32);
    return;
  }
  if (n == 64) {
    select_block<Dtype, 32>(static_cast<uint32_t>(bits), 32, a, b, out);
    select_block<Dtype, 32>(static_cast<uint32_t>(bits >> 32), 32, a + 32, b + 32, out + 32);
    return;
  }
  for (int half = 0; half * 32 < n; ++half) {  // the blob's last, partial word
    select_block<Dtype, 0>(static_cast<uint32_t>(bits >> (32 * half)), std::min(32, n - 32 * half),
                           a + 32 * half, b + 32 * half, out + 32 * half);
  }
}

// Orders the streamed stores before anything that follows (they bypass the usual ordering).
inline void store_fence() {
#ifdef __SSE2__
  _mm_sfence();
#endif
}

}  // namespace

template <typename Dtype>
void dropin_select_forward(int count, const Dtype* prev, const Dtype* next, double p_new,
                           uint64_t key, uint64_t* mask, Dtype* top) {
  const Threshold threshold(p_new);
  const uint64_t tie_key = mix64(key);
  const bool stream = streams(count, top);
  for (int begin = 0; begin < count; begin += 64) {
    const uint64_t bits = mask_word(key, tie_key, begin / 64, threshold);
    mask[begin / 64] = bits;
    select_units(bits, std::min(64, count - begin), prev + begin, next + begin, top + begin, stream);
  }
  if (stream) store_fence();
}

template <typename Dtype>
void dropin_select_backward(int count, const Dtype* top_diff, const uint64_t* mask,
                            Dtype* prev_diff, Dtype* new_diff) {
  const Dtype zeros[64] = {};
  const bool stream = streams(count, new_diff ? new_diff : prev_diff)
                      && (!new_diff || !prev_diff || streams(count, prev_diff));
  for (int begin = 0; begin < count; begin += 64) {
    const int n = std::min(64, count - begin);
    if (new_diff) select_units(mask[begin / 64], n, zeros, top_diff + begin, new_diff + begin, stream);
    if (prev_diff) select_units(mask[begin / 64], n, top_diff + begin, zeros, prev_diff + begin, stream);
  }
  if (stream) store_fence();
}

template <typename Dtype>
void dropin_blend_forward(int count, const Dtype* prev, const Dtype* next, double p, Dtype* top) {
  if (p == 0.0) {
    caffe::caffe_copy(count, prev, top);
  } else if (p == 1.0) {
    caffe::caffe_copy(count, next, top);
  } else {
    const Dtype to_new = p, to_prev = 1.0 - p;
    for (int i = 0; i < count; ++i) top[i] = to_new * next[i] + to_prev * prev[i];
  }
}

template <typename Dtype>
void dropin_blend_backward(int count, const Dtype* top_diff, double p, Dtype* prev_diff,
                           Dtype* new_diff) {
  const double weights[2] = {1.0 - p, p};
  Dtype* diffs[2] = {prev_diff, new_diff};
  for (int k = 0; k < 2; ++k) {
    if (!diffs[k]) continue;
    if (weights[k] == 1.0) {
      caffe::caffe_copy(count, top_diff, diffs[k]);
    } else if (weights[k] == 0.0) {
      caffe::caffe_set(count, Dtype(0), diffs[k]);
    } else {
      caffe::caffe_cpu_scale(count, Dtype(weights[k]), top_diff, diffs[k]);
    }
  }
}

template <typename Dtype>
void DropInLayer<Dtype>::LayerSetUp(const std::vector<caffe::Blob<Dtype>*>& bottom,
                                    const std::vector<caffe::Blob<Dtype>*>& top) {
  const Rules rules = {
      {"name", text_rule()},
      {"mode", choice_rule({"gradual", "regularize"})},
      {"length", integer_rule(1)},
      {"start", integer_rule(0)},
      {"p_new", probability_rule()},
      {"iter_size", integer_rule(1)},
      {"seed", integer_rule(0)},
      {"test", choice_rule({"expectation", "new", "prev"})},
      {"train", choice_rule({"select", "blend"})},
  };
  const Json defaults = {{"mode", "gradual"}, {"iter_size", 1}, {"test", "expectation"}, {"train", "select"}};
  config_ = parse_param_str("DropIn", this->layer_param_.python_param().param_str(), rules, defaults);
  const bool gradual = config_.values["mode"] == "gradual";
  const std::string mode = gradual ? "gradual" : "regularize";
  const std::string needed = gradual ? "length" : "p_new";
  const std::vector<std::string> forbidden =
      gradual ? std::vector<std::string>{"p_new"} : std::vector<std::string>{"length", "start"};
  if (!config_.has(needed))
    fail(config_.label + ": mode \"" + mode + "\" needs \"" + needed + "\" in param_str");
  for (const std::string& other : forbidden) {
    if (config_.has(other))
      fail(config_.label + ": \"" + other + "\" has no meaning in mode \"" + mode + "\"; remove it");
  }
  if (bottom.size() != 2)
    fail(config_.label + ": takes 2 bottoms (prev, new), got " + std::to_string(bottom.size()));
  if (top.size() != 1 && top.size() != 2)
    fail(config_.label + ": takes 1 or 2 tops (the output, and optionally p), got " + std::to_string(top.size()));
  if (this->blobs_.empty()) {
    this->blobs_.push_back(boost::shared_ptr<caffe::Blob<Dtype> >(new caffe::Blob<Dtype>(std::vector<int>(1, 2))));
    caffe::caffe_set(2, Dtype(0), this->blobs_[0]->mutable_cpu_data());
  } else if (this->blobs_[0]->count() != 2) {
    fail(config_.label + ": its parameter blob must hold 2 values (the iteration counter), holds "
         + std::to_string(this->blobs_[0]->count()));
  }
  this->param_propagate_down_.assign(this->blobs_.size(), false);  // the counter has no gradient
  seeded_ = config_.has("seed");
  seed_ = seeded_ ? config_.values["seed"].get<uint64_t>() : 0;
  drew_mask_ = false;
  p_used_ = 0.0;
}

template <typename Dtype>
void DropInLayer<Dtype>::Reshape(const std::vector<caffe::Blob<Dtype>*>& bottom,
                                 const std::vector<caffe::Blob<Dtype>*>& top) {
  if (bottom[0]->shape() != bottom[1]->shape()) {
    fail(config_.label + ": bottoms prev and new must have the same shape, got " + shape_text(bottom[0]->shape())
         + " and " + shape_text(bottom[1]->shape()) + "; insert a Resize layer (python_param { module: "
         "\"dropin_caffe.layers\" layer: \"Resize\" }) to match them");
  }
  top[0]->ReshapeLike(*bottom[0]);
  if (top.size() == 2) top[1]->Reshape(std::vector<int>(1, 1));
  mask_.resize((bottom[0]->count() + 63) / 64);
}

template <typename Dtype>
uint64_t DropInLayer<Dtype>::forward_count() const {
  const Dtype* counter = this->blobs_[0]->cpu_data();
  const double low = counter[0], high = counter[1];
  if (!(low == std::floor(low) && high == std::floor(high) && low >= 0 && low < kLow && high >= 0
        && std::isfinite(high))) {
    fail(config_.label + ": its iteration counter (parameter blob) holds " + python_repr(low) + ", "
         + python_repr(high) + ", which are not whole numbers: the solver has changed it; add "
         "param { lr_mult: 0 decay_mult: 0 } to the layer");
  }
  return static_cast<uint64_t>(high) * static_cast<uint64_t>(kLow) + static_cast<uint64_t>(low);
}

template <typename Dtype>
void DropInLayer<Dtype>::set_forward_count(uint64_t count) {
  const uint64_t low = static_cast<uint64_t>(kLow);
  Dtype* counter = this->blobs_[0]->mutable_cpu_data();
  counter[0] = static_cast<Dtype>(count % low);
  counter[1] = static_cast<Dtype>(count / low);
}

template <typename Dtype>
double DropInLayer<Dtype>::p_new_at(uint64_t count) const {
  const Json& values = config_.values;
  if (values["mode"] == "regularize") return values["p_new"].get<double>();
  const double iteration = static_cast<double>(count / values["iter_size"].get<uint64_t>());
  const double start = config_.has("start") ? values["start"].get<double>() : 0.0;
  return std::min(1.0, std::max(0.0, (iteration - start) / values["length"].get<double>()));
}

template <typename Dtype>
uint64_t DropInLayer<Dtype>::mask_key(uint64_t count) const {
  // With a seed, the mask of TRAIN pass `count` depends on (seed, count) alone: a resumed run or
  // a counter set back draws the same masks again.
  if (seeded_) return mix64(mix64(seed_) + count * kGolden);
  // Else Caffe's RNG, so the solver's random_seed makes a run reproducible.
  return (static_cast<uint64_t>(caffe::caffe_rng_rand()) << 32) | caffe::caffe_rng_rand();
}

template <typename Dtype>
void DropInLayer<Dtype>::Forward_cpu(const std::vector<caffe::Blob<Dtype>*>& bottom,
                                     const std::vector<caffe::Blob<Dtype>*>& top) {
  const uint64_t count = forward_count();  // read (and checked) once per pass
  const double p_new = p_new_at(count);
  if (this->phase_ == caffe::TRAIN) {
    set_forward_count(count + 1);
    drew_mask_ = config_.values["train"] == "select" && 0.0 < p_new && p_new < 1.0;
    p_used_ = p_new;
  } else {
    const Json& test = config_.values["test"];
    drew_mask_ = false;
    p_used_ = test == "new" ? 1.0 : test == "prev" ? 0.0 : p_new;
  }
  const int units = bottom[0]->count();
  const Dtype* prev = bottom[0]->cpu_data();
  const Dtype* next = bottom[1]->cpu_data();
  Dtype* out = top[0]->mutable_cpu_data();
  if (drew_mask_) {
    dropin_select_forward(units, prev, next, p_new, mask_key(count), mask_.data(), out);
  } else {
    dropin_blend_forward(units, prev, next, p_used_, out);
  }
  if (top.size() == 2) top[1]->mutable_cpu_data()[0] = static_cast<Dtype>(p_new);
}

template <typename Dtype>
void DropInLayer<Dtype>::Backward_cpu(const std::vector<caffe::Blob<Dtype>*>& top,
                                      const std::vector<bool>& propagate_down,
                                      const std::vector<caffe::Blob<Dtype>*>& bottom) {
  Dtype* prev_diff = propagate_down[0] ? bottom[0]->mutable_cpu_diff() : nullptr;
  Dtype* new_diff = propagate_down[1] ? bottom[1]->mutable_cpu_diff() : nullptr;
  if (!prev_diff && !new_diff) return;
  const int units = top[0]->count();
  if (drew_mask_) {
    dropin_select_backward(units, top[0]->cpu_diff(), mask_.data(), prev_diff, new_diff);
  } else {
    dropin_blend_backward(units, top[0]->cpu_diff(), p_used_, prev_diff, new_diff);
  }
}

#define DROPIN_INSTANTIATE(Dtype)                                                              \
  template void dropin_select_forward<Dtype>(int, const Dtype*, const Dtype*, double, uint64_t,   \
                                             uint64_t*, Dtype*);                                \
  template void dropin_select_backward<Dtype>(int, const Dtype*, const uint64_t*, Dtype*, Dtype*); \
  template void dropin_blend_forward<Dtype>(int, const Dtype*, const Dtype*, double, Dtype*);    \
  template void dropin_blend_backward<Dtype>(int, const Dtype*, double, Dtype*, Dtype*);         \
  template class DropInLayer<Dtype>;
DROPIN_INSTANTIATE(float)
DROPIN_INSTANTIATE(double)

}  // namespace dropin_caffe
