// A stand-in for libnvinfer or libnvonnxparser, for the TensorRT shim's tests
// on machines without TensorRT (src/engine/tensorrt/tests.rs compiles it).
// It exports the entry points the shim looks up with dlsym; each factory logs
// an error through the logger it is given, as TensorRT does, and returns null.
// The version it reports is read from the file `fake_version` beside the
// library, so one build serves every version a test needs.
//   -DFAKE_PARSER          build libnvonnxparser's entry points instead
//   -DFAKE_NO_FACTORIES    leave out the factories (a library that is not TensorRT)
#include <NvInfer.h>
#include <dlfcn.h>

#include <cstdio>
#include <string>

namespace {
int32_t version_beside_me() {
    Dl_info info;
    if (dladdr(reinterpret_cast<void*>(&version_beside_me), &info) == 0 || info.dli_fname == nullptr) {
        return -1;
    }
    std::string path = info.dli_fname;
    path = path.substr(0, path.rfind('/') + 1) + "fake_version";
    int version = -1;
    if (FILE* f = std::fopen(path.c_str(), "r")) {
        if (std::fscanf(f, "%d", &version) != 1) {
            version = -1;
        }
        std::fclose(f);
    }
    return version;
}

void log_error(void* logger, const char* text) {
    static_cast<nvinfer1::ILogger*>(logger)->log(nvinfer1::ILogger::Severity::kERROR, text);
}
}  // namespace

extern "C" {
#if defined(FAKE_PARSER)
void* createNvOnnxParser_INTERNAL(void*, void* logger, int) noexcept {
    log_error(logger, "fake parser: no parser here");
    return nullptr;
}
int getNvOnnxParserVersion() noexcept { return 200; }
#else
#if !defined(FAKE_NO_FACTORIES)
void* createInferRuntime_INTERNAL(void* logger, int32_t) noexcept {
    log_error(logger, "fake libnvinfer: no runtime here");
    return nullptr;
}
void* createInferBuilder_INTERNAL(void* logger, int32_t) noexcept {
    log_error(logger, "fake libnvinfer: no builder here");
    return nullptr;
}
#endif
int32_t getInferLibVersion() noexcept { return version_beside_me(); }
int32_t getInferLibBuildVersion() noexcept { return 7; }
#endif
}
