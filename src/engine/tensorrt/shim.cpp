// vrseg's C shim over TensorRT 10 / 11 (see shim.h for the contract).
//
// Rules this file keeps:
// - No C++ exception leaves an extern "C" function. Those that return a
//   status run their body inside `guarded`, which turns any exception into
//   VRSEG_TRT_EXCEPTION; the getters and destroy functions call only
//   TensorRT methods and destructors that TensorRT declares noexcept, and
//   catch what else could throw (vrseg_trt_library_close).
// - TensorRT is reached only through function pointers from dlsym and virtual
//   calls on the objects they return; no TensorRT symbol is referenced, so
//   this object links where TensorRT is absent (checked by a test with nm).
// - Failures name the TensorRT call and quote the errors TensorRT logged
//   during it (the logger keeps the recent ones).
//
// TensorRT API reference: https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/c-api/

#include "shim.h"

#include <NvInfer.h>
#include <NvOnnxParser.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstring>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#if NV_TENSORRT_MAJOR < 10
#error "vrseg's TensorRT shim needs TensorRT 10 or newer headers"
#endif

// The C enum in shim.h mirrors TensorRT's values; these hold for 10.0 onwards.
static_assert(static_cast<int32_t>(nvinfer1::DataType::kFLOAT) == VRSEG_TRT_DTYPE_FLOAT, "DataType");
static_assert(static_cast<int32_t>(nvinfer1::DataType::kHALF) == VRSEG_TRT_DTYPE_HALF, "DataType");
static_assert(static_cast<int32_t>(nvinfer1::DataType::kINT8) == VRSEG_TRT_DTYPE_INT8, "DataType");
static_assert(static_cast<int32_t>(nvinfer1::DataType::kINT32) == VRSEG_TRT_DTYPE_INT32, "DataType");
static_assert(static_cast<int32_t>(nvinfer1::DataType::kBOOL) == VRSEG_TRT_DTYPE_BOOL, "DataType");
static_assert(static_cast<int32_t>(nvinfer1::DataType::kUINT8) == VRSEG_TRT_DTYPE_UINT8, "DataType");
static_assert(static_cast<int32_t>(nvinfer1::DataType::kFP8) == VRSEG_TRT_DTYPE_FP8, "DataType");
static_assert(static_cast<int32_t>(nvinfer1::DataType::kBF16) == VRSEG_TRT_DTYPE_BF16, "DataType");
static_assert(static_cast<int32_t>(nvinfer1::DataType::kINT64) == VRSEG_TRT_DTYPE_INT64, "DataType");
static_assert(static_cast<int32_t>(nvinfer1::DataType::kINT4) == VRSEG_TRT_DTYPE_INT4, "DataType");
static_assert(static_cast<int32_t>(nvinfer1::TensorIOMode::kINPUT) == VRSEG_TRT_IO_INPUT, "TensorIOMode");
static_assert(static_cast<int32_t>(nvinfer1::TensorIOMode::kOUTPUT) == VRSEG_TRT_IO_OUTPUT, "TensorIOMode");
static_assert(nvinfer1::Dims::MAX_DIMS == VRSEG_TRT_MAX_DIMS, "Dims64::MAX_DIMS");

namespace {

// Copies `text` into the caller's error buffer, truncating. Never throws.
void write_error(vrseg_trt_error* error, const char* text) noexcept {
    if (error != nullptr) {
        std::snprintf(error->message, sizeof error->message, "%s", text != nullptr ? text : "");
    }
}

// Runs `body`, turning any C++ exception into a status and a sentence.
template <class Body>
vrseg_trt_status guarded(vrseg_trt_error* error, Body&& body) noexcept {
    try {
        return body();
    } catch (const std::bad_alloc&) {
        write_error(error, "out of host memory inside the TensorRT shim");
    } catch (const std::exception& e) {
        char text[VRSEG_TRT_MESSAGE_BYTES];
        std::snprintf(text, sizeof text, "C++ exception inside the TensorRT shim: %s", e.what());
        write_error(error, text);
    } catch (...) {
        write_error(error, "unknown C++ exception inside the TensorRT shim");
    }
    return VRSEG_TRT_EXCEPTION;
}

// TensorRT's logger. It forwards every message to the caller's callback and
// keeps the recent errors, which failures quote (TensorRT's calls return
// only null or false; the reason is in the log).
class Logger final : public nvinfer1::ILogger {
public:
    Logger(vrseg_trt_log_fn callback, void* user) : callback_(callback), user_(user) {}

    void log(Severity severity, const nvinfer1::AsciiChar* message) noexcept override {
        const char* text = message != nullptr ? message : "";
        try {
            std::lock_guard<std::mutex> lock(mutex_);
            if (severity <= Severity::kERROR) {
                errors_.emplace_back(++sequence_, text);
                while (errors_.size() > kKeptErrors) {
                    errors_.pop_front();
                }
            }
            // Called under the lock so that `detach` cannot race a call in
            // flight; the callback must not call back into TensorRT.
            if (callback_ != nullptr) {
                callback_(user_, static_cast<int32_t>(severity), text);
            }
        } catch (...) {
            // Logging must never throw into TensorRT; a lost message is the lesser harm.
        }
    }

    // Marks the log's position before a call, for `errors_since`.
    uint64_t mark() {
        std::lock_guard<std::mutex> lock(mutex_);
        return sequence_;
    }

    // The errors logged after `mark`, joined with "; ".
    std::string errors_since(uint64_t mark) {
        std::lock_guard<std::mutex> lock(mutex_);
        std::string joined;
        for (const auto& entry : errors_) {
            if (entry.first > mark) {
                if (!joined.empty()) {
                    joined += "; ";
                }
                joined += entry.second;
            }
        }
        return joined;
    }

    // Stops forwarding: the callback's user data may be gone after this.
    void detach() {
        std::lock_guard<std::mutex> lock(mutex_);
        callback_ = nullptr;
        user_ = nullptr;
    }

private:
    static constexpr size_t kKeptErrors = 16;
    std::mutex mutex_;
    std::deque<std::pair<uint64_t, std::string>> errors_;
    uint64_t sequence_ = 0;
    vrseg_trt_log_fn callback_;
    void* user_;
};

using CreateFn = void* (*)(void* logger, int32_t version);
using CreateParserFn = void* (*)(void* network, void* logger, int version);
using VersionFn = int32_t (*)();
using ParserVersionFn = int (*)();

}  // namespace

struct vrseg_trt_library {
    void* nvinfer = nullptr;
    void* parser = nullptr;
    std::string nvinfer_path;
    std::string parser_path;
    std::string parser_error;
    CreateFn create_runtime = nullptr;
    CreateFn create_builder = nullptr;
    VersionFn lib_version = nullptr;
    VersionFn lib_build = nullptr;
    CreateParserFn create_parser = nullptr;
    ParserVersionFn parser_version = nullptr;
    // Heap-allocated and never freed: TensorRT keeps a process-wide pointer
    // to the first logger it is given (see vrseg_trt_library_close).
    Logger* logger = nullptr;
};

// The handles own their TensorRT object and delete it in their destructor
// (TensorRT 10+ objects are released with `delete`).
struct vrseg_trt_runtime {
    vrseg_trt_runtime(vrseg_trt_library* l, nvinfer1::IRuntime* r) : library(l), runtime(r) {}
    ~vrseg_trt_runtime() { delete runtime; }
    vrseg_trt_runtime(const vrseg_trt_runtime&) = delete;
    vrseg_trt_runtime& operator=(const vrseg_trt_runtime&) = delete;
    vrseg_trt_library* library;
    nvinfer1::IRuntime* runtime;
};

struct vrseg_trt_engine {
    vrseg_trt_engine(vrseg_trt_library* l, nvinfer1::ICudaEngine* e) : library(l), engine(e) {}
    ~vrseg_trt_engine() { delete engine; }
    vrseg_trt_engine(const vrseg_trt_engine&) = delete;
    vrseg_trt_engine& operator=(const vrseg_trt_engine&) = delete;
    vrseg_trt_library* library;
    nvinfer1::ICudaEngine* engine;
};

struct vrseg_trt_context {
    vrseg_trt_context(vrseg_trt_library* l, nvinfer1::IExecutionContext* c) : library(l), context(c) {}
    ~vrseg_trt_context() { delete context; }
    vrseg_trt_context(const vrseg_trt_context&) = delete;
    vrseg_trt_context& operator=(const vrseg_trt_context&) = delete;
    vrseg_trt_library* library;
    nvinfer1::IExecutionContext* context;
};

// Filled step by step by vrseg_trt_network_parse; released in reverse order
// of creation (the parser refers to the network, the network to the builder).
struct vrseg_trt_network {
    explicit vrseg_trt_network(vrseg_trt_library* l) : library(l) {}
    ~vrseg_trt_network() {
        delete parser;
        delete network;
        delete builder;
    }
    vrseg_trt_network(const vrseg_trt_network&) = delete;
    vrseg_trt_network& operator=(const vrseg_trt_network&) = delete;
    vrseg_trt_library* library;
    nvinfer1::IBuilder* builder = nullptr;
    nvinfer1::INetworkDefinition* network = nullptr;
    nvonnxparser::IParser* parser = nullptr;
};

struct vrseg_trt_blob {
    explicit vrseg_trt_blob(nvinfer1::IHostMemory* m) : memory(m) {}
    ~vrseg_trt_blob() { delete memory; }
    vrseg_trt_blob(const vrseg_trt_blob&) = delete;
    vrseg_trt_blob& operator=(const vrseg_trt_blob&) = delete;
    nvinfer1::IHostMemory* memory;
};

namespace {

std::string version_text(int32_t version) {
    return std::to_string(version / 10000) + "." + std::to_string(version / 100 % 100) + "." +
           std::to_string(version % 100);
}

// A failure: `what` plus the errors TensorRT logged since `mark`.
vrseg_trt_status fail(vrseg_trt_error* error, vrseg_trt_status status, Logger* logger, uint64_t mark,
                      const std::string& what) {
    std::string text = what;
    if (logger != nullptr) {
        std::string logged = logger->errors_since(mark);
        if (!logged.empty()) {
            text += " (TensorRT: " + logged + ")";
        }
    }
    write_error(error, text.c_str());
    return status;
}

vrseg_trt_status invalid(vrseg_trt_error* error, const std::string& what) {
    return fail(error, VRSEG_TRT_INVALID_ARGUMENT, nullptr, 0, what);
}

// The file a handle was loaded from, through a symbol it exports.
std::string loaded_file(void* symbol, const char* fallback) {
    Dl_info info;
    if (symbol != nullptr && dladdr(symbol, &info) != 0 && info.dli_fname != nullptr) {
        return info.dli_fname;
    }
    return fallback;
}

// dlopens the first loadable candidate. `failures` collects dlerror for the
// candidates that exist but did not load (a missing dependency, say), which
// say more than "not found" for the ones that do not exist.
void* open_first(const char* const* candidates, size_t count, const char** opened, std::string* failures) {
    for (size_t i = 0; i < count; ++i) {
        if (candidates[i] == nullptr) {
            continue;
        }
        void* handle = dlopen(candidates[i], RTLD_NOW | RTLD_LOCAL);
        if (handle != nullptr) {
            *opened = candidates[i];
            return handle;
        }
        const char* reason = dlerror();
        std::string text = reason != nullptr ? reason : "unknown dlopen error";
        // glibc: "<name>: cannot open shared object file: No such file or directory"
        // when the candidate itself is absent; anything else is worth reporting.
        std::string absent = std::string(candidates[i]) + ": cannot open shared object file";
        if (text.compare(0, absent.size(), absent) != 0) {
            if (!failures->empty()) {
                failures->append("; ");
            }
            failures->append(text);
        }
    }
    return nullptr;
}

template <class Fn>
Fn symbol(void* handle, const char* name) {
    return reinterpret_cast<Fn>(dlsym(handle, name));
}

vrseg_trt_dims to_c(const nvinfer1::Dims& dims) {
    vrseg_trt_dims out{};
    out.rank = dims.nbDims;
    for (int32_t i = 0; i < dims.nbDims && i < VRSEG_TRT_MAX_DIMS; ++i) {
        out.d[i] = dims.d[i];
    }
    return out;
}

bool to_trt(const vrseg_trt_dims& dims, nvinfer1::Dims* out) {
    if (dims.rank < 0 || dims.rank > nvinfer1::Dims::MAX_DIMS) {
        return false;
    }
    *out = nvinfer1::Dims{};
    out->nbDims = dims.rank;
    for (int32_t i = 0; i < dims.rank; ++i) {
        out->d[i] = dims.d[i];
    }
    return true;
}

// Refuses a library the headers cannot describe (see shim.h).
vrseg_trt_status check_compatible(vrseg_trt_library* library, vrseg_trt_error* error) {
    int32_t version = library->lib_version();
    if (vrseg_trt_library_compatible(version) == 0) {
        return fail(error, VRSEG_TRT_VERSION_MISMATCH, nullptr, 0,
                    "TensorRT " + version_text(version) + " (" + library->nvinfer_path +
                        ") cannot be used by a shim compiled against TensorRT " +
                        version_text(static_cast<int32_t>(NV_TENSORRT_VERSION)) + " headers");
    }
    return VRSEG_TRT_OK;
}

vrseg_trt_tensor_info network_tensor_info(nvinfer1::ITensor* tensor, vrseg_trt_io_mode mode) {
    vrseg_trt_tensor_info info{};
    info.name = tensor->getName();
    info.mode = mode;
    info.dtype = static_cast<int32_t>(tensor->getType());
    info.shape = to_c(tensor->getDimensions());
    info.on_device = 1;
    info.linear = 1;
    return info;
}

}  // namespace

extern "C" {

int32_t vrseg_trt_header_version(void) {
    return static_cast<int32_t>(NV_TENSORRT_VERSION);
}

int32_t vrseg_trt_library_compatible(int32_t library_version) {
    const int32_t header = static_cast<int32_t>(NV_TENSORRT_VERSION);
    const bool same_major = library_version / 10000 == header / 10000;
    const bool not_older = library_version / 100 >= header / 100;
    return same_major && not_older ? 1 : 0;
}

vrseg_trt_status vrseg_trt_library_open(const char* const* nvinfer_candidates, size_t nvinfer_count,
                                        const char* const* parser_candidates, size_t parser_count,
                                        vrseg_trt_log_fn log, void* log_user, vrseg_trt_library** out,
                                        vrseg_trt_error* error) {
    return guarded(error, [&]() -> vrseg_trt_status {
        if (out == nullptr || (nvinfer_candidates == nullptr && nvinfer_count > 0) ||
            (parser_candidates == nullptr && parser_count > 0)) {
            return invalid(error, "vrseg_trt_library_open: null argument");
        }
        *out = nullptr;
        auto library = std::make_unique<vrseg_trt_library>();
        const char* opened = nullptr;
        std::string failures;
        library->nvinfer = open_first(nvinfer_candidates, nvinfer_count, &opened, &failures);
        if (library->nvinfer == nullptr) {
            return fail(error, VRSEG_TRT_NOT_FOUND, nullptr, 0, failures);
        }
        library->create_runtime = symbol<CreateFn>(library->nvinfer, "createInferRuntime_INTERNAL");
        library->create_builder = symbol<CreateFn>(library->nvinfer, "createInferBuilder_INTERNAL");
        library->lib_version = symbol<VersionFn>(library->nvinfer, "getInferLibVersion");
        library->lib_build = symbol<VersionFn>(library->nvinfer, "getInferLibBuildVersion");
        library->nvinfer_path = loaded_file(reinterpret_cast<void*>(library->lib_version), opened);
        const char* missing = library->create_runtime == nullptr   ? "createInferRuntime_INTERNAL"
                              : library->create_builder == nullptr ? "createInferBuilder_INTERNAL"
                              : library->lib_version == nullptr    ? "getInferLibVersion"
                                                                   : nullptr;
        if (missing != nullptr) {
            std::string path = library->nvinfer_path;
            // Not ours to keep: the handle was never used.
            dlclose(library->nvinfer);
            return fail(error, VRSEG_TRT_MISSING_SYMBOL, nullptr, 0, path + " does not export " + missing);
        }
        if (parser_count > 0) {
            std::string parser_failures;
            library->parser = open_first(parser_candidates, parser_count, &opened, &parser_failures);
            if (library->parser != nullptr) {
                library->create_parser = symbol<CreateParserFn>(library->parser, "createNvOnnxParser_INTERNAL");
                library->parser_version = symbol<ParserVersionFn>(library->parser, "getNvOnnxParserVersion");
                library->parser_path = loaded_file(reinterpret_cast<void*>(library->create_parser), opened);
                if (library->create_parser == nullptr) {
                    library->parser_error = library->parser_path + " does not export createNvOnnxParser_INTERNAL";
                    dlclose(library->parser);
                    library->parser = nullptr;
                    library->parser_path.clear();
                }
            } else {
                library->parser_error = parser_failures;
            }
        }
        library->logger = new Logger(log, log_user);
        *out = library.release();
        return VRSEG_TRT_OK;
    });
}

void vrseg_trt_library_close(vrseg_trt_library* library) {
    if (library == nullptr) {
        return;
    }
    // The logger stays allocated (TensorRT may still hold it) but forwards
    // nothing more. The libraries stay loaded too: TensorRT's CUDA runtime
    // state is not built to be unloaded, and dlclose would only drop a
    // reference count.
    try {
        library->logger->detach();
    } catch (...) {
        // std::mutex::lock may throw std::system_error; nothing may cross
        // the C boundary, and the library object is freed either way.
    }
    delete library;
}

int32_t vrseg_trt_library_version(const vrseg_trt_library* library) {
    return library != nullptr && library->lib_version != nullptr ? library->lib_version() : -1;
}

int32_t vrseg_trt_library_build(const vrseg_trt_library* library) {
    return library != nullptr && library->lib_build != nullptr ? library->lib_build() : -1;
}

const char* vrseg_trt_library_nvinfer_path(const vrseg_trt_library* library) {
    return library != nullptr ? library->nvinfer_path.c_str() : nullptr;
}

const char* vrseg_trt_library_parser_path(const vrseg_trt_library* library) {
    return library != nullptr && library->parser != nullptr ? library->parser_path.c_str() : nullptr;
}

const char* vrseg_trt_library_parser_error(const vrseg_trt_library* library) {
    return library != nullptr ? library->parser_error.c_str() : "";
}

int32_t vrseg_trt_library_parser_version(const vrseg_trt_library* library) {
    return library != nullptr && library->parser_version != nullptr ? library->parser_version() : -1;
}

vrseg_trt_status vrseg_trt_runtime_create(vrseg_trt_library* library, vrseg_trt_runtime** out,
                                          vrseg_trt_error* error) {
    return guarded(error, [&]() -> vrseg_trt_status {
        if (library == nullptr || out == nullptr) {
            return invalid(error, "vrseg_trt_runtime_create: null argument");
        }
        *out = nullptr;
        vrseg_trt_status status = check_compatible(library, error);
        if (status != VRSEG_TRT_OK) {
            return status;
        }
        uint64_t mark = library->logger->mark();
        auto* runtime = static_cast<nvinfer1::IRuntime*>(library->create_runtime(
            static_cast<nvinfer1::ILogger*>(library->logger), static_cast<int32_t>(NV_TENSORRT_VERSION)));
        if (runtime == nullptr) {
            return fail(error, VRSEG_TRT_FAILED, library->logger, mark, "createInferRuntime returned null");
        }
        std::unique_ptr<nvinfer1::IRuntime> owned(runtime);
        *out = new vrseg_trt_runtime(library, owned.get());
        owned.release();
        return VRSEG_TRT_OK;
    });
}

void vrseg_trt_runtime_destroy(vrseg_trt_runtime* runtime) {
    delete runtime;
}

vrseg_trt_status vrseg_trt_engine_deserialize(vrseg_trt_runtime* runtime, const void* plan, size_t bytes,
                                              vrseg_trt_engine** out, vrseg_trt_error* error) {
    return guarded(error, [&]() -> vrseg_trt_status {
        if (runtime == nullptr || plan == nullptr || out == nullptr || bytes == 0) {
            return invalid(error, "vrseg_trt_engine_deserialize: null or empty argument");
        }
        *out = nullptr;
        Logger* logger = runtime->library->logger;
        uint64_t mark = logger->mark();
        nvinfer1::ICudaEngine* engine = runtime->runtime->deserializeCudaEngine(plan, bytes);
        if (engine == nullptr) {
            return fail(error, VRSEG_TRT_FAILED, logger, mark, "IRuntime::deserializeCudaEngine failed");
        }
        std::unique_ptr<nvinfer1::ICudaEngine> owned(engine);
        *out = new vrseg_trt_engine(runtime->library, owned.get());
        owned.release();
        return VRSEG_TRT_OK;
    });
}

void vrseg_trt_engine_destroy(vrseg_trt_engine* engine) {
    delete engine;
}

int32_t vrseg_trt_engine_io_count(const vrseg_trt_engine* engine) {
    return engine != nullptr ? engine->engine->getNbIOTensors() : 0;
}

vrseg_trt_status vrseg_trt_engine_io_info(const vrseg_trt_engine* engine, int32_t index,
                                          vrseg_trt_tensor_info* out, vrseg_trt_error* error) {
    return guarded(error, [&]() -> vrseg_trt_status {
        if (engine == nullptr || out == nullptr) {
            return invalid(error, "vrseg_trt_engine_io_info: null argument");
        }
        nvinfer1::ICudaEngine* e = engine->engine;
        if (index < 0 || index >= e->getNbIOTensors()) {
            return invalid(error, "I/O tensor index " + std::to_string(index) + " is out of range (the engine has " +
                                      std::to_string(e->getNbIOTensors()) + ")");
        }
        const char* name = e->getIOTensorName(index);
        if (name == nullptr) {
            return invalid(error, "ICudaEngine::getIOTensorName returned null");
        }
        *out = vrseg_trt_tensor_info{};
        out->name = name;
        out->mode = static_cast<int32_t>(e->getTensorIOMode(name));
        out->dtype = static_cast<int32_t>(e->getTensorDataType(name));
        out->shape = to_c(e->getTensorShape(name));
        out->on_device = e->getTensorLocation(name) == nvinfer1::TensorLocation::kDEVICE ? 1 : 0;
        out->linear = e->getTensorFormat(name) == nvinfer1::TensorFormat::kLINEAR ? 1 : 0;
        return VRSEG_TRT_OK;
    });
}

int32_t vrseg_trt_engine_profile_count(const vrseg_trt_engine* engine) {
    return engine != nullptr ? engine->engine->getNbOptimizationProfiles() : 0;
}

vrseg_trt_status vrseg_trt_engine_profile_shape(const vrseg_trt_engine* engine, const char* name, int32_t profile,
                                                vrseg_trt_dims* min, vrseg_trt_dims* opt, vrseg_trt_dims* max,
                                                vrseg_trt_error* error) {
    return guarded(error, [&]() -> vrseg_trt_status {
        if (engine == nullptr || name == nullptr || min == nullptr || opt == nullptr || max == nullptr) {
            return invalid(error, "vrseg_trt_engine_profile_shape: null argument");
        }
        nvinfer1::ICudaEngine* e = engine->engine;
        if (profile < 0 || profile >= e->getNbOptimizationProfiles()) {
            return invalid(error, "optimisation profile " + std::to_string(profile) + " does not exist");
        }
        Logger* logger = engine->library->logger;
        uint64_t mark = logger->mark();
        nvinfer1::Dims lo = e->getProfileShape(name, profile, nvinfer1::OptProfileSelector::kMIN);
        nvinfer1::Dims mid = e->getProfileShape(name, profile, nvinfer1::OptProfileSelector::kOPT);
        nvinfer1::Dims hi = e->getProfileShape(name, profile, nvinfer1::OptProfileSelector::kMAX);
        if (lo.nbDims < 0 || mid.nbDims < 0 || hi.nbDims < 0) {
            return fail(error, VRSEG_TRT_INVALID_ARGUMENT, logger, mark,
                        std::string("ICudaEngine::getProfileShape failed for `") + name + "`");
        }
        *min = to_c(lo);
        *opt = to_c(mid);
        *max = to_c(hi);
        return VRSEG_TRT_OK;
    });
}

vrseg_trt_status vrseg_trt_engine_device_memory(const vrseg_trt_engine* engine, int32_t profile, int64_t* bytes,
                                                vrseg_trt_error* error) {
    return guarded(error, [&]() -> vrseg_trt_status {
        if (engine == nullptr || bytes == nullptr) {
            return invalid(error, "vrseg_trt_engine_device_memory: null argument");
        }
        if (profile < 0 || profile >= engine->engine->getNbOptimizationProfiles()) {
            return invalid(error, "optimisation profile " + std::to_string(profile) + " does not exist");
        }
#if NV_TENSORRT_VERSION >= 100100
        *bytes = engine->engine->getDeviceMemorySizeForProfileV2(profile);
#else
        *bytes = static_cast<int64_t>(engine->engine->getDeviceMemorySizeForProfile(profile));
#endif
        return VRSEG_TRT_OK;
    });
}

vrseg_trt_status vrseg_trt_context_create(vrseg_trt_engine* engine, vrseg_trt_context** out,
                                          vrseg_trt_error* error) {
    return guarded(error, [&]() -> vrseg_trt_status {
        if (engine == nullptr || out == nullptr) {
            return invalid(error, "vrseg_trt_context_create: null argument");
        }
        *out = nullptr;
        Logger* logger = engine->library->logger;
        uint64_t mark = logger->mark();
        nvinfer1::IExecutionContext* context =
            engine->engine->createExecutionContext(nvinfer1::ExecutionContextAllocationStrategy::kUSER_MANAGED);
        if (context == nullptr) {
            return fail(error, VRSEG_TRT_FAILED, logger, mark, "ICudaEngine::createExecutionContext failed");
        }
        std::unique_ptr<nvinfer1::IExecutionContext> owned(context);
        *out = new vrseg_trt_context(engine->library, owned.get());
        owned.release();
        return VRSEG_TRT_OK;
    });
}

void vrseg_trt_context_destroy(vrseg_trt_context* context) {
    delete context;
}

vrseg_trt_status vrseg_trt_context_set_profile(vrseg_trt_context* context, int32_t profile, void* stream,
                                               vrseg_trt_error* error) {
    return guarded(error, [&]() -> vrseg_trt_status {
        if (context == nullptr) {
            return invalid(error, "vrseg_trt_context_set_profile: null argument");
        }
        Logger* logger = context->library->logger;
        uint64_t mark = logger->mark();
        if (!context->context->setOptimizationProfileAsync(profile, static_cast<cudaStream_t>(stream))) {
            return fail(error, VRSEG_TRT_FAILED, logger, mark,
                        "IExecutionContext::setOptimizationProfileAsync(" + std::to_string(profile) + ") failed");
        }
        return VRSEG_TRT_OK;
    });
}

vrseg_trt_status vrseg_trt_context_set_device_memory(vrseg_trt_context* context, uint64_t memory, int64_t bytes,
                                                     vrseg_trt_error* error) {
    return guarded(error, [&]() -> vrseg_trt_status {
        if (context == nullptr || bytes < 0) {
            return invalid(error, "vrseg_trt_context_set_device_memory: null or negative argument");
        }
        void* pointer = reinterpret_cast<void*>(static_cast<uintptr_t>(memory));
#if NV_TENSORRT_VERSION >= 100100
        Logger* logger = context->library->logger;
        uint64_t mark = logger->mark();
        context->context->setDeviceMemoryV2(pointer, bytes);
        std::string logged = logger->errors_since(mark);
        if (!logged.empty()) {
            return fail(error, VRSEG_TRT_FAILED, logger, mark, "IExecutionContext::setDeviceMemoryV2 failed");
        }
#else
        (void)bytes;
        context->context->setDeviceMemory(pointer);
#endif
        return VRSEG_TRT_OK;
    });
}

vrseg_trt_status vrseg_trt_context_set_input_shape(vrseg_trt_context* context, const char* name,
                                                   const vrseg_trt_dims* shape, vrseg_trt_error* error) {
    return guarded(error, [&]() -> vrseg_trt_status {
        if (context == nullptr || name == nullptr || shape == nullptr) {
            return invalid(error, "vrseg_trt_context_set_input_shape: null argument");
        }
        nvinfer1::Dims dims;
        if (!to_trt(*shape, &dims)) {
            return invalid(error, "rank " + std::to_string(shape->rank) + " is outside 0..8");
        }
        Logger* logger = context->library->logger;
        uint64_t mark = logger->mark();
        if (!context->context->setInputShape(name, dims)) {
            return fail(error, VRSEG_TRT_INVALID_ARGUMENT, logger, mark,
                        std::string("IExecutionContext::setInputShape(`") + name + "`) failed");
        }
        return VRSEG_TRT_OK;
    });
}

vrseg_trt_status vrseg_trt_context_tensor_shape(const vrseg_trt_context* context, const char* name,
                                                vrseg_trt_dims* out, vrseg_trt_error* error) {
    return guarded(error, [&]() -> vrseg_trt_status {
        if (context == nullptr || name == nullptr || out == nullptr) {
            return invalid(error, "vrseg_trt_context_tensor_shape: null argument");
        }
        nvinfer1::Dims dims = context->context->getTensorShape(name);
        if (dims.nbDims < 0) {
            return invalid(error, std::string("no I/O tensor is named `") + name + "`");
        }
        *out = to_c(dims);
        return VRSEG_TRT_OK;
    });
}

vrseg_trt_status vrseg_trt_context_set_tensor_address(vrseg_trt_context* context, const char* name,
                                                      uint64_t address, vrseg_trt_error* error) {
    return guarded(error, [&]() -> vrseg_trt_status {
        if (context == nullptr || name == nullptr) {
            return invalid(error, "vrseg_trt_context_set_tensor_address: null argument");
        }
        Logger* logger = context->library->logger;
        uint64_t mark = logger->mark();
        if (!context->context->setTensorAddress(name, reinterpret_cast<void*>(static_cast<uintptr_t>(address)))) {
            return fail(error, VRSEG_TRT_INVALID_ARGUMENT, logger, mark,
                        std::string("IExecutionContext::setTensorAddress(`") + name + "`) failed");
        }
        return VRSEG_TRT_OK;
    });
}

vrseg_trt_status vrseg_trt_context_enqueue(vrseg_trt_context* context, void* stream, vrseg_trt_error* error) {
    return guarded(error, [&]() -> vrseg_trt_status {
        if (context == nullptr) {
            return invalid(error, "vrseg_trt_context_enqueue: null argument");
        }
        Logger* logger = context->library->logger;
        uint64_t mark = logger->mark();
        if (!context->context->enqueueV3(static_cast<cudaStream_t>(stream))) {
            return fail(error, VRSEG_TRT_FAILED, logger, mark, "IExecutionContext::enqueueV3 failed");
        }
        return VRSEG_TRT_OK;
    });
}

vrseg_trt_status vrseg_trt_network_parse(vrseg_trt_library* library, const char* onnx_path,
                                         vrseg_trt_network** out, vrseg_trt_error* error) {
    return guarded(error, [&]() -> vrseg_trt_status {
        if (library == nullptr || onnx_path == nullptr || out == nullptr) {
            return invalid(error, "vrseg_trt_network_parse: null argument");
        }
        *out = nullptr;
        if (library->parser == nullptr) {
            return fail(error, VRSEG_TRT_NOT_FOUND, nullptr, 0, "TensorRT's ONNX parser is not loaded");
        }
        vrseg_trt_status status = check_compatible(library, error);
        if (status != VRSEG_TRT_OK) {
            return status;
        }
        Logger* logger = library->logger;
        uint64_t mark = logger->mark();
        // Everything made so far is released by the handle's destructor on every failure path.
        auto network = std::make_unique<vrseg_trt_network>(library);

        network->builder = static_cast<nvinfer1::IBuilder*>(library->create_builder(
            static_cast<nvinfer1::ILogger*>(logger), static_cast<int32_t>(NV_TENSORRT_VERSION)));
        if (network->builder == nullptr) {
            return fail(error, VRSEG_TRT_FAILED, logger, mark, "createInferBuilder returned null");
        }
        // 0: explicit batch, weakly typed on TensorRT 10; TensorRT 11 networks are always strongly typed.
        network->network = network->builder->createNetworkV2(0U);
        if (network->network == nullptr) {
            return fail(error, VRSEG_TRT_FAILED, logger, mark, "IBuilder::createNetworkV2 failed");
        }
        network->parser = static_cast<nvonnxparser::IParser*>(library->create_parser(
            network->network, static_cast<nvinfer1::ILogger*>(logger), NV_ONNX_PARSER_VERSION));
        if (network->parser == nullptr) {
            return fail(error, VRSEG_TRT_FAILED, logger, mark, "createNvOnnxParser returned null");
        }
        if (!network->parser->parseFromFile(onnx_path,
                                            static_cast<int>(nvinfer1::ILogger::Severity::kWARNING))) {
            std::string what = std::string("TensorRT's ONNX parser rejected ") + onnx_path;
            int32_t count = network->parser->getNbErrors();
            for (int32_t i = 0; i < count && i < 8; ++i) {
                const nvonnxparser::IParserError* e = network->parser->getError(i);
                if (e == nullptr) {
                    continue;
                }
                what += i == 0 ? ": " : "; ";
                if (e->node() >= 0) {
                    what += "node " + std::to_string(e->node()) + ": ";
                }
                what += e->desc() != nullptr ? e->desc() : "(no description)";
            }
            return fail(error, VRSEG_TRT_FAILED, logger, mark, what);
        }
        *out = network.release();
        return VRSEG_TRT_OK;
    });
}

void vrseg_trt_network_destroy(vrseg_trt_network* network) {
    delete network;
}

int32_t vrseg_trt_network_input_count(const vrseg_trt_network* network) {
    return network != nullptr ? network->network->getNbInputs() : 0;
}

int32_t vrseg_trt_network_output_count(const vrseg_trt_network* network) {
    return network != nullptr ? network->network->getNbOutputs() : 0;
}

vrseg_trt_status vrseg_trt_network_input_info(const vrseg_trt_network* network, int32_t index,
                                              vrseg_trt_tensor_info* out, vrseg_trt_error* error) {
    return guarded(error, [&]() -> vrseg_trt_status {
        if (network == nullptr || out == nullptr) {
            return invalid(error, "vrseg_trt_network_input_info: null argument");
        }
        if (index < 0 || index >= network->network->getNbInputs()) {
            return invalid(error, "network input " + std::to_string(index) + " does not exist");
        }
        *out = network_tensor_info(network->network->getInput(index), VRSEG_TRT_IO_INPUT);
        return VRSEG_TRT_OK;
    });
}

vrseg_trt_status vrseg_trt_network_output_info(const vrseg_trt_network* network, int32_t index,
                                               vrseg_trt_tensor_info* out, vrseg_trt_error* error) {
    return guarded(error, [&]() -> vrseg_trt_status {
        if (network == nullptr || out == nullptr) {
            return invalid(error, "vrseg_trt_network_output_info: null argument");
        }
        if (index < 0 || index >= network->network->getNbOutputs()) {
            return invalid(error, "network output " + std::to_string(index) + " does not exist");
        }
        *out = network_tensor_info(network->network->getOutput(index), VRSEG_TRT_IO_OUTPUT);
        return VRSEG_TRT_OK;
    });
}

vrseg_trt_status vrseg_trt_network_build(vrseg_trt_network* network, const vrseg_trt_build_config* config,
                                         vrseg_trt_build_result* out, vrseg_trt_error* error) {
    return guarded(error, [&]() -> vrseg_trt_status {
        if (network == nullptr || config == nullptr || out == nullptr ||
            (config->profile == nullptr && config->profile_count > 0)) {
            return invalid(error, "vrseg_trt_network_build: null argument");
        }
        *out = vrseg_trt_build_result{};
#if NV_TENSORRT_MAJOR >= 11
        if (config->fp16 != 0 || config->int8 != 0) {
            return fail(error, VRSEG_TRT_UNSUPPORTED, nullptr, 0,
                        "TensorRT 11 builds strongly typed networks only: the ONNX model's types set the precision");
        }
#endif
        Logger* logger = network->library->logger;
        uint64_t mark = logger->mark();
        nvinfer1::IBuilder* builder = network->builder;

        // Declared before the config, so destroyed after it: the config refers to the cache.
        std::unique_ptr<nvinfer1::ITimingCache> cache;
        std::unique_ptr<nvinfer1::IBuilderConfig> builder_config(builder->createBuilderConfig());
        if (!builder_config) {
            return fail(error, VRSEG_TRT_FAILED, logger, mark, "IBuilder::createBuilderConfig failed");
        }
        if (config->workspace_bytes > 0) {
            builder_config->setMemoryPoolLimit(nvinfer1::MemoryPoolType::kWORKSPACE,
                                               static_cast<size_t>(config->workspace_bytes));
        }
#if NV_TENSORRT_MAJOR < 11
        // Weak typing: deprecated since TensorRT 10.12 in favour of strongly
        // typed networks, removed in 11, and still how TensorRT 10 users get
        // FP16 kernels from an FP32 ONNX model.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        if (config->fp16 != 0) {
            builder_config->setFlag(nvinfer1::BuilderFlag::kFP16);
        }
        if (config->int8 != 0) {
            builder_config->setFlag(nvinfer1::BuilderFlag::kINT8);
        }
#pragma GCC diagnostic pop
#endif
        if (config->optimization_level >= 0) {
            builder_config->setBuilderOptimizationLevel(config->optimization_level);
        }
        if (config->profile_count > 0) {
            // Owned by the builder.
            nvinfer1::IOptimizationProfile* profile = builder->createOptimizationProfile();
            if (profile == nullptr) {
                return fail(error, VRSEG_TRT_FAILED, logger, mark, "IBuilder::createOptimizationProfile failed");
            }
            for (size_t i = 0; i < config->profile_count; ++i) {
                const vrseg_trt_profile_input& input = config->profile[i];
                nvinfer1::Dims lo;
                nvinfer1::Dims mid;
                nvinfer1::Dims hi;
                if (input.name == nullptr || !to_trt(input.min, &lo) || !to_trt(input.opt, &mid) ||
                    !to_trt(input.max, &hi)) {
                    return invalid(error, "optimisation profile input " + std::to_string(i) + " is malformed");
                }
                if (!profile->setDimensions(input.name, nvinfer1::OptProfileSelector::kMIN, lo) ||
                    !profile->setDimensions(input.name, nvinfer1::OptProfileSelector::kOPT, mid) ||
                    !profile->setDimensions(input.name, nvinfer1::OptProfileSelector::kMAX, hi)) {
                    return fail(error, VRSEG_TRT_INVALID_ARGUMENT, logger, mark,
                                std::string("IOptimizationProfile::setDimensions(`") + input.name + "`) failed");
                }
            }
            if (!profile->isValid() || builder_config->addOptimizationProfile(profile) < 0) {
                return fail(error, VRSEG_TRT_INVALID_ARGUMENT, logger, mark,
                            "the optimisation profile is not valid for this network");
            }
        }

        cache.reset(builder_config->createTimingCache(config->timing_cache, config->timing_cache_bytes));
        bool accepted = cache && builder_config->setTimingCache(*cache, false);
        if (!accepted && config->timing_cache_bytes > 0) {
            // A cache from another GPU or TensorRT version: start from an empty one.
            out->timing_cache_rejected = 1;
            cache.reset(builder_config->createTimingCache(nullptr, 0));
            accepted = cache && builder_config->setTimingCache(*cache, false);
            mark = logger->mark();
        }
        if (!accepted) {
            return fail(error, VRSEG_TRT_FAILED, logger, mark, "IBuilderConfig::setTimingCache failed");
        }

        std::unique_ptr<nvinfer1::IHostMemory> plan(builder->buildSerializedNetwork(*network->network,
                                                                                     *builder_config));
        if (!plan || plan->size() == 0) {
            return fail(error, VRSEG_TRT_FAILED, logger, mark, "IBuilder::buildSerializedNetwork failed");
        }
        std::unique_ptr<nvinfer1::IHostMemory> cache_bytes;
        if (const nvinfer1::ITimingCache* used = builder_config->getTimingCache()) {
            cache_bytes.reset(used->serialize());
        }
        auto plan_blob = std::make_unique<vrseg_trt_blob>(plan.get());
        plan.release();
        std::unique_ptr<vrseg_trt_blob> cache_blob;
        if (cache_bytes) {
            cache_blob = std::make_unique<vrseg_trt_blob>(cache_bytes.get());
            cache_bytes.release();
        }
        out->plan = plan_blob.release();
        out->timing_cache = cache_blob.release();
        return VRSEG_TRT_OK;
    });
}

const void* vrseg_trt_blob_data(const vrseg_trt_blob* blob) {
    return blob != nullptr ? blob->memory->data() : nullptr;
}

size_t vrseg_trt_blob_size(const vrseg_trt_blob* blob) {
    return blob != nullptr ? blob->memory->size() : 0;
}

void vrseg_trt_blob_destroy(vrseg_trt_blob* blob) {
    delete blob;
}

}  // extern "C"
