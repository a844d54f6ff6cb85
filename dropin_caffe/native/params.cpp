#include "params.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <glog/logging.h>

namespace dropin_caffe {

Rule integer_rule(long long minimum) {
  Rule rule;
  rule.text = "an integer >= " + std::to_string(minimum);
  rule.check = [minimum](const Json& v) {
    if (v.is_number_unsigned())  // the parser's type for every integer >= 0
      return minimum <= 0 || v.get<unsigned long long>() >= static_cast<unsigned long long>(minimum);
    return v.is_number_integer() && v.get<long long>() >= minimum;
  };
  return rule;
}

Rule choice_rule(const std::vector<std::string>& options) {
  Rule rule;
  rule.text = "one of ";
  for (size_t i = 0; i < options.size(); ++i)
    rule.text += (i ? ", \"" : "\"") + options[i] + "\"";
  rule.check = [options](const Json& v) {
    if (!v.is_string()) return false;
    for (const std::string& option : options)
      if (v.get<std::string>() == option) return true;
    return false;
  };
  return rule;
}

Rule probability_rule() {
  Rule rule;
  rule.text = "a number with 0 < value <= 1";
  rule.check = [](const Json& v) {
    return v.is_number() && v.get<double>() > 0 && v.get<double>() <= 1;
  };
  return rule;
}

Rule text_rule() {
  Rule rule;
  rule.text = "a string";
  rule.check = [](const Json& v) { return v.is_string(); };
  return rule;
}

void fail(const std::string& message) {
  // Caffe's own fatal message goes to its log, which the `caffe` command line may not show.
  std::cerr << "dropin_caffe: " << message << std::endl;
  LOG(FATAL) << message;
  std::abort();  // not reached; LOG(FATAL) does not return
}

std::string python_repr(const std::string& text) {
  const char quote = (text.find('\'') != std::string::npos && text.find('"') == std::string::npos)
                     ? '"' : '\'';
  std::string out(1, quote);
  for (char c : text) {
    if (c == '\\' || c == quote) out += '\\';
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else out += c;
  }
  return out + quote;
}

std::string python_repr(double value) {
  char text[32];
  for (int digits = 1; digits <= 17; ++digits) {  // the shortest text that reads back exactly
    std::snprintf(text, sizeof text, "%.*g", digits, value);
    if (std::strtod(text, nullptr) == value) break;
  }
  std::string out(text);
  if (std::isfinite(value) && out.find_first_of(".e") == std::string::npos) out += ".0";
  return out;
}

std::string shape_text(const std::vector<int>& shape) {
  std::string out = "(";
  for (size_t i = 0; i < shape.size(); ++i) out += (i ? ", " : "") + std::to_string(shape[i]);
  return out + (shape.size() == 1 ? ",)" : ")");
}

Config parse_param_str(const std::string& kind, const std::string& param_str,
                       const Rules& rules, const Json& defaults) {
  const std::string example = "param_str must be a JSON object such as '{\"length\": 1000}', got ";
  Json given = Json::object();
  if (param_str.find_first_not_of(" \t\r\n") != std::string::npos) {
    try {
      given = Json::parse(param_str);
    } catch (const Json::parse_error& error) {
      fail(kind + ": " + example + python_repr(param_str) + " (" + error.what() + ")");
    }
  }
  if (!given.is_object()) fail(kind + ": " + example + python_repr(param_str));
  Config config;
  config.label = given.contains("name") && given["name"].is_string()
      ? kind + " '" + given["name"].get<std::string>() + "'"
      : kind + " (param_str " + python_repr(param_str) + ")";
  for (auto item = given.begin(); item != given.end(); ++item) {
    const Rule* rule = nullptr;
    for (const auto& known : rules)
      if (known.first == item.key()) rule = &known.second;
    if (!rule) {
      std::vector<std::string> keys;
      for (const auto& known : rules) keys.push_back(known.first);
      std::sort(keys.begin(), keys.end());
      std::string listed;
      for (size_t i = 0; i < keys.size(); ++i) listed += (i ? ", " : "") + keys[i];
      fail(config.label + ": unknown key \"" + item.key() + "\" in param_str; known keys: " + listed);
    }
    if (!rule->check(item.value()))
      fail(config.label + ": \"" + item.key() + "\" must be " + rule->text + ", got " + item.value().dump());
  }
  config.values = defaults;
  for (auto item = given.begin(); item != given.end(); ++item) config.values[item.key()] = item.value();
  return config;
}

}  // namespace dropin_caffe
