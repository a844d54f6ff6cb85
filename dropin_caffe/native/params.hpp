// Reading a layer's param_str: a JSON object checked key by key against rules, with the same
// keys, rule texts and messages as dropin_caffe/params.py, so a prototxt switches between the
// Python and the native layer by its `type` line alone.
#ifndef DROPIN_CAFFE_NATIVE_PARAMS_HPP_
#define DROPIN_CAFFE_NATIVE_PARAMS_HPP_

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace dropin_caffe {

// Keeps the keys in the order given, so the first bad key reported is the one Python reports.
typedef nlohmann::ordered_json Json;

struct Rule {
  std::string text;                          // "an integer >= 1"
  std::function<bool(const Json&)> check;
};
typedef std::vector<std::pair<std::string, Rule> > Rules;

Rule integer_rule(long long minimum);
Rule choice_rule(const std::vector<std::string>& options);
Rule probability_rule();
Rule text_rule();

struct Config {
  Json values;        // the given keys over the defaults
  std::string label;  // "DropIn 'dropin3'", or "DropIn (param_str '...')" without a "name"
  bool has(const std::string& key) const { return values.contains(key); }
};

// The checked param_str; a broken rule ends in fail() with the message params.py raises.
Config parse_param_str(const std::string& kind, const std::string& param_str,
                       const Rules& rules, const Json& defaults);

// Write "dropin_caffe: <message>" on stderr, then stop through Caffe's LOG(FATAL).
[[noreturn]] void fail(const std::string& message);

// Python's spelling of values, so messages read alike in both implementations.
std::string python_repr(const std::string& text);  // 'text'
std::string python_repr(double value);              // 0.5, 3.0
std::string shape_text(const std::vector<int>& shape);  // (2, 3), (3,)

}  // namespace dropin_caffe

#endif  // DROPIN_CAFFE_NATIVE_PARAMS_HPP_
