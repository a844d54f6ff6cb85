// Registers "DropIn" and "DropInResize" in the Caffe that loaded us, at load time.
//
// Caffe's registry is a static local of an inline header function (layer_factory.hpp), so the
// copy a plugin compiles in is private to the plugin (we build with hidden visibility): adding
// to it would leave Caffe saying "Unknown layer type". So we find libcaffe itself (the library
// holding caffe_rng_rand) and call its own exported LayerRegistry<Dtype>::AddCreator, after
// looking in its registry: our own creators already there (a second load) are left alone; a
// creator of that name from any other library stops us with a message instead of being used.
#include <dlfcn.h>

#include <map>
#include <string>

#include "caffe/layer.hpp"
#include "caffe/util/math_functions.hpp"

#include "dropin_layer.hpp"
#include "params.hpp"
#include "resize_layer.hpp"

namespace dropin_caffe {
namespace {

template <typename Dtype>
struct Names;  // libcaffe's mangled names, as `nm -D libcaffe.so` lists them

template <>
struct Names<float> {
  static constexpr const char* add_creator =
      "_ZN5caffe13LayerRegistryIfE10AddCreatorERKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE"
      "PFN5boost10shared_ptrINS_5LayerIfEEEERKNS_14LayerParameterEE";
  static constexpr const char* registry = "_ZZN5caffe13LayerRegistryIfE8RegistryB5cxx11EvE11g_registry_";
};

template <>
struct Names<double> {
  static constexpr const char* add_creator =
      "_ZN5caffe13LayerRegistryIdE10AddCreatorERKNSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEEE"
      "PFN5boost10shared_ptrINS_5LayerIdEEEERKNS_14LayerParameterEE";
  static constexpr const char* registry = "_ZZN5caffe13LayerRegistryIdE8RegistryB5cxx11EvE11g_registry_";
};

template <typename Dtype, template <typename> class LayerClass>
boost::shared_ptr<caffe::Layer<Dtype> > create(const caffe::LayerParameter& param) {
  return boost::shared_ptr<caffe::Layer<Dtype> >(new LayerClass<Dtype>(param));
}

std::string library_of(const void* address) {
  Dl_info info;
  return dladdr(address, &info) && info.dli_fname ? info.dli_fname : "an unknown library";
}

template <typename Dtype>
void add(void* libcaffe, const std::string& libcaffe_path, const std::string& type,
         typename caffe::LayerRegistry<Dtype>::Creator creator) {
  typedef typename caffe::LayerRegistry<Dtype>::CreatorRegistry Registry;
  typedef void (*AddCreator)(const std::string&, typename caffe::LayerRegistry<Dtype>::Creator);
  void* registry_symbol = dlsym(libcaffe, Names<Dtype>::registry);
  if (registry_symbol && *static_cast<Registry**>(registry_symbol)) {
    const Registry& registry = **static_cast<Registry**>(registry_symbol);
    const typename Registry::const_iterator found = registry.find(type);
    if (found != registry.end()) {
      const std::string owner = library_of(reinterpret_cast<const void*>(found->second));
      if (owner == library_of(reinterpret_cast<const void*>(creator))) return;  // loaded before
      fail("layer type \"" + type + "\" is already registered in Caffe by " + owner + "; load only one "
           "build of the dropin_caffe native layers (check LD_PRELOAD), or use the Python layers");
    }
  }
  AddCreator add_creator = reinterpret_cast<AddCreator>(dlsym(libcaffe, Names<Dtype>::add_creator));
  if (!add_creator)
    fail(libcaffe_path + " does not export LayerRegistry::AddCreator as Caffe 1.0 does; the native "
         "layers cannot register there: use the Python layers");
  add_creator(type, creator);
}

__attribute__((constructor)) void register_layers() {
  const std::string path = library_of(reinterpret_cast<const void*>(&caffe::caffe_rng_rand));
  void* libcaffe = dlopen(path.c_str(), RTLD_NOW | RTLD_NOLOAD);
  if (!libcaffe) fail("cannot find the loaded libcaffe (" + path + ") to register the native layers in");
  add<float>(libcaffe, path, "DropIn", &create<float, DropInLayer>);
  add<double>(libcaffe, path, "DropIn", &create<double, DropInLayer>);
  add<float>(libcaffe, path, "DropInResize", &create<float, DropInResizeLayer>);
  add<double>(libcaffe, path, "DropInResize", &create<double, DropInResizeLayer>);
  dlclose(libcaffe);  // drops only the reference RTLD_NOLOAD took
}

}  // namespace
}  // namespace dropin_caffe

// What `python3 -m dropin_caffe.native info` reports; also marks a library as ours.
extern "C" __attribute__((visibility("default"))) const char* dropin_caffe_native_types() {
  return "DropIn DropInResize";
}
