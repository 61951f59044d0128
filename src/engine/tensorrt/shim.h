/* vrseg's C shim over TensorRT's C++ API (TensorRT 10 and 11).
 *
 * Plain C: opaque handles, one create/destroy pair per object, every call that
 * can fail returns a vrseg_trt_status and writes one sentence into the
 * caller's vrseg_trt_error (TensorRT's own error log included). No C++
 * exception crosses this boundary: shim.cpp catches everything.
 *
 * TensorRT is never linked. vrseg_trt_library_open dlopens libnvinfer (and,
 * when asked, libnvonnxparser) from the caller's candidate list and reaches
 * TensorRT only through the factory functions those libraries export
 * (createInferRuntime_INTERNAL, createInferBuilder_INTERNAL,
 * createNvOnnxParser_INTERNAL, getInferLibVersion, ...), found with dlsym.
 * Every other TensorRT call is a virtual call on an object those factories
 * returned, so the shim's object file references no TensorRT symbol
 * (src/engine/tensorrt/tests.rs checks this with nm).
 *
 * The C++ interfaces are compatible only within one TensorRT major version,
 * and a library older than the headers may lack methods the headers declare:
 * vrseg_trt_runtime_create and vrseg_trt_network_parse refuse a library whose
 * version does not satisfy vrseg_trt_library_compatible.
 *
 * Rust bindings: bindgen runs over this header at build time (build.rs,
 * `tensorrt_shim`), so the Rust declarations cannot drift from it.
 *
 * Ownership: a runtime must outlive its engines, an engine its contexts, and
 * the library everything made from it. The Rust layer (handles.rs) enforces
 * this with reference counts; C callers must do it themselves.
 *
 * Threads: one object is used by one thread at a time. The library's log
 * callback may be called from any thread, including TensorRT's builder
 * threads. */
#ifndef VRSEG_TENSORRT_SHIM_H
#define VRSEG_TENSORRT_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum vrseg_trt_status {
    VRSEG_TRT_OK = 0,
    /* No candidate of a library could be dlopen'ed. */
    VRSEG_TRT_NOT_FOUND = 1,
    /* A library lacks a symbol the shim needs (not a TensorRT 10/11 library). */
    VRSEG_TRT_MISSING_SYMBOL = 2,
    /* The library's version does not match the headers the shim was compiled against. */
    VRSEG_TRT_VERSION_MISMATCH = 3,
    /* A bad argument (null handle, unknown tensor name, rank too large, ...). */
    VRSEG_TRT_INVALID_ARGUMENT = 4,
    /* TensorRT reported failure; the message quotes its error log. */
    VRSEG_TRT_FAILED = 5,
    /* The request needs a feature this TensorRT version does not have. */
    VRSEG_TRT_UNSUPPORTED = 6,
    /* A C++ exception (e.g. std::bad_alloc) was caught inside the shim. */
    VRSEG_TRT_EXCEPTION = 7
} vrseg_trt_status;

#define VRSEG_TRT_MESSAGE_BYTES 4096

/* One sentence, NUL-terminated, written by a failing call (truncated to fit). */
typedef struct vrseg_trt_error {
    char message[VRSEG_TRT_MESSAGE_BYTES];
} vrseg_trt_error;

/* TensorRT's Dims64. */
#define VRSEG_TRT_MAX_DIMS 8
typedef struct vrseg_trt_dims {
    int32_t rank;
    int64_t d[VRSEG_TRT_MAX_DIMS];
} vrseg_trt_dims;

/* nvinfer1::DataType values (shim.cpp asserts they agree). */
typedef enum vrseg_trt_dtype {
    VRSEG_TRT_DTYPE_FLOAT = 0,
    VRSEG_TRT_DTYPE_HALF = 1,
    VRSEG_TRT_DTYPE_INT8 = 2,
    VRSEG_TRT_DTYPE_INT32 = 3,
    VRSEG_TRT_DTYPE_BOOL = 4,
    VRSEG_TRT_DTYPE_UINT8 = 5,
    VRSEG_TRT_DTYPE_FP8 = 6,
    VRSEG_TRT_DTYPE_BF16 = 7,
    VRSEG_TRT_DTYPE_INT64 = 8,
    VRSEG_TRT_DTYPE_INT4 = 9
} vrseg_trt_dtype;

typedef enum vrseg_trt_io_mode {
    VRSEG_TRT_IO_NONE = 0,
    VRSEG_TRT_IO_INPUT = 1,
    VRSEG_TRT_IO_OUTPUT = 2
} vrseg_trt_io_mode;

/* An engine's or a network's input or output. `name` stays valid as long as
 * the engine or network that filled this in. */
typedef struct vrseg_trt_tensor_info {
    const char* name;
    int32_t mode;  /* vrseg_trt_io_mode */
    int32_t dtype; /* vrseg_trt_dtype (TensorRT's value, also for types this header does not name) */
    vrseg_trt_dims shape; /* -1 for a dynamic dimension */
    int32_t on_device;    /* 1 when TensorRT expects the tensor in device memory (engines only; 1 for networks) */
    int32_t linear;       /* 1 when the layout is TensorFormat::kLINEAR (engines only; 1 for networks) */
} vrseg_trt_tensor_info;

/* TensorRT's severities: 0 internal error, 1 error, 2 warning, 3 info, 4 verbose. */
typedef void (*vrseg_trt_log_fn)(void* user, int32_t severity, const char* message);

typedef struct vrseg_trt_library vrseg_trt_library;
typedef struct vrseg_trt_runtime vrseg_trt_runtime;
typedef struct vrseg_trt_engine vrseg_trt_engine;
typedef struct vrseg_trt_context vrseg_trt_context;
typedef struct vrseg_trt_network vrseg_trt_network;
typedef struct vrseg_trt_blob vrseg_trt_blob;

/* ---- the headers the shim was compiled against (no library needed) ---- */

/* NV_TENSORRT_VERSION of the headers: major * 10000 + minor * 100 + patch. */
int32_t vrseg_trt_header_version(void);

/* 1 when a library of version `library_version` (same encoding) may be used
 * with these headers: same major version, and not older than the headers. */
int32_t vrseg_trt_library_compatible(int32_t library_version);

/* ---- the libraries ---- */

/* dlopens the first loadable entry of `nvinfer_candidates` (paths or bare
 * sonames, which the dynamic loader resolves through LD_LIBRARY_PATH and its
 * cache) and resolves its factory functions; then, when `parser_count` > 0,
 * the same for libnvonnxparser. A missing parser is not an error: see
 * vrseg_trt_library_parser_path. The log callback (may be NULL) receives every
 * message TensorRT logs through objects made from this library. */
vrseg_trt_status vrseg_trt_library_open(const char* const* nvinfer_candidates, size_t nvinfer_count,
                                        const char* const* parser_candidates, size_t parser_count,
                                        vrseg_trt_log_fn log, void* log_user, vrseg_trt_library** out,
                                        vrseg_trt_error* error);

/* dlcloses the libraries. Every object made from `library` must be destroyed first. */
void vrseg_trt_library_close(vrseg_trt_library* library);

/* getInferLibVersion(), encoded as vrseg_trt_header_version. */
int32_t vrseg_trt_library_version(const vrseg_trt_library* library);

/* getInferLibBuildVersion(), or -1 where the library does not export it. */
int32_t vrseg_trt_library_build(const vrseg_trt_library* library);

/* The candidate that loaded (as given, or the file the loader resolved it to). */
const char* vrseg_trt_library_nvinfer_path(const vrseg_trt_library* library);

/* Same for the ONNX parser; NULL when it was not asked for or did not load. */
const char* vrseg_trt_library_parser_path(const vrseg_trt_library* library);

/* Why the parser did not load (dlerror of the last candidate); "" when it loaded. */
const char* vrseg_trt_library_parser_error(const vrseg_trt_library* library);

/* getNvOnnxParserVersion(), or -1 without a parser. */
int32_t vrseg_trt_library_parser_version(const vrseg_trt_library* library);

/* ---- running engines ---- */

vrseg_trt_status vrseg_trt_runtime_create(vrseg_trt_library* library, vrseg_trt_runtime** out,
                                          vrseg_trt_error* error);
void vrseg_trt_runtime_destroy(vrseg_trt_runtime* runtime);

/* Deserialises a plan. `plan` need only live for the duration of the call.
 * The CUDA context of the GPU to run on must be current on this thread. */
vrseg_trt_status vrseg_trt_engine_deserialize(vrseg_trt_runtime* runtime, const void* plan, size_t bytes,
                                              vrseg_trt_engine** out, vrseg_trt_error* error);
void vrseg_trt_engine_destroy(vrseg_trt_engine* engine);

int32_t vrseg_trt_engine_io_count(const vrseg_trt_engine* engine);
vrseg_trt_status vrseg_trt_engine_io_info(const vrseg_trt_engine* engine, int32_t index,
                                          vrseg_trt_tensor_info* out, vrseg_trt_error* error);
int32_t vrseg_trt_engine_profile_count(const vrseg_trt_engine* engine);

/* The min / opt / max shapes of input `name` in optimisation profile `profile`. */
vrseg_trt_status vrseg_trt_engine_profile_shape(const vrseg_trt_engine* engine, const char* name, int32_t profile,
                                                vrseg_trt_dims* min, vrseg_trt_dims* opt, vrseg_trt_dims* max,
                                                vrseg_trt_error* error);

/* Device memory (activations) a context needs for `profile`, in bytes. */
vrseg_trt_status vrseg_trt_engine_device_memory(const vrseg_trt_engine* engine, int32_t profile, int64_t* bytes,
                                                vrseg_trt_error* error);

/* An execution context whose device memory the caller provides
 * (ExecutionContextAllocationStrategy::kUSER_MANAGED). */
vrseg_trt_status vrseg_trt_context_create(vrseg_trt_engine* engine, vrseg_trt_context** out,
                                          vrseg_trt_error* error);
void vrseg_trt_context_destroy(vrseg_trt_context* context);

/* `stream` is a cudaStream_t / CUstream. */
vrseg_trt_status vrseg_trt_context_set_profile(vrseg_trt_context* context, int32_t profile, void* stream,
                                               vrseg_trt_error* error);
/* `memory` must stay valid, unused by anything else, while work enqueued on the context may run. */
vrseg_trt_status vrseg_trt_context_set_device_memory(vrseg_trt_context* context, uint64_t memory, int64_t bytes,
                                                     vrseg_trt_error* error);
vrseg_trt_status vrseg_trt_context_set_input_shape(vrseg_trt_context* context, const char* name,
                                                   const vrseg_trt_dims* shape, vrseg_trt_error* error);
/* The shape of any I/O tensor given the input shapes set so far. */
vrseg_trt_status vrseg_trt_context_tensor_shape(const vrseg_trt_context* context, const char* name,
                                                vrseg_trt_dims* out, vrseg_trt_error* error);
/* Binds tensor `name` to device address `address` (a CUdeviceptr). */
vrseg_trt_status vrseg_trt_context_set_tensor_address(vrseg_trt_context* context, const char* name,
                                                      uint64_t address, vrseg_trt_error* error);
/* enqueueV3 on `stream`; may be called while the stream is being captured into a CUDA graph. */
vrseg_trt_status vrseg_trt_context_enqueue(vrseg_trt_context* context, void* stream, vrseg_trt_error* error);

/* ---- building engines ---- */

/* Creates a builder and an (explicit-batch) network and parses the ONNX file
 * into it. Needs the parser (vrseg_trt_library_open with parser candidates). */
vrseg_trt_status vrseg_trt_network_parse(vrseg_trt_library* library, const char* onnx_path,
                                         vrseg_trt_network** out, vrseg_trt_error* error);
void vrseg_trt_network_destroy(vrseg_trt_network* network);

int32_t vrseg_trt_network_input_count(const vrseg_trt_network* network);
int32_t vrseg_trt_network_output_count(const vrseg_trt_network* network);
vrseg_trt_status vrseg_trt_network_input_info(const vrseg_trt_network* network, int32_t index,
                                              vrseg_trt_tensor_info* out, vrseg_trt_error* error);
vrseg_trt_status vrseg_trt_network_output_info(const vrseg_trt_network* network, int32_t index,
                                               vrseg_trt_tensor_info* out, vrseg_trt_error* error);

/* The shapes of one input in the optimisation profile. */
typedef struct vrseg_trt_profile_input {
    const char* name;
    vrseg_trt_dims min;
    vrseg_trt_dims opt;
    vrseg_trt_dims max;
} vrseg_trt_profile_input;

typedef struct vrseg_trt_build_config {
    /* MemoryPoolType::kWORKSPACE limit; 0 leaves TensorRT's default. */
    uint64_t workspace_bytes;
    /* BuilderFlag::kFP16 / kINT8: TensorRT 10 only (11 builds strongly typed
     * networks only); VRSEG_TRT_UNSUPPORTED when set with TensorRT 11 headers. */
    int32_t fp16;
    int32_t int8;
    /* Builder optimisation level 0..5; -1 leaves TensorRT's default (3). */
    int32_t optimization_level;
    /* One optimisation profile holding these inputs; none when count is 0. */
    const vrseg_trt_profile_input* profile;
    size_t profile_count;
    /* A serialised timing cache to start from; NULL / 0 for an empty one. */
    const void* timing_cache;
    size_t timing_cache_bytes;
} vrseg_trt_build_config;

/* What a build returns. Both blobs are owned by the caller. */
typedef struct vrseg_trt_build_result {
    /* The serialised engine (a plan). */
    vrseg_trt_blob* plan;
    /* The timing cache after the build, to pass to the next build. */
    vrseg_trt_blob* timing_cache;
    /* 1 when the given timing cache was refused (made by another GPU or
     * TensorRT version) and the build started from an empty one. */
    int32_t timing_cache_rejected;
} vrseg_trt_build_result;

/* Builds a serialised engine. The CUDA context of the GPU to build for must
 * be current on this thread. On failure `out` holds no blob. */
vrseg_trt_status vrseg_trt_network_build(vrseg_trt_network* network, const vrseg_trt_build_config* config,
                                         vrseg_trt_build_result* out, vrseg_trt_error* error);

/* Bytes TensorRT returned (a plan or a timing cache). */
const void* vrseg_trt_blob_data(const vrseg_trt_blob* blob);
size_t vrseg_trt_blob_size(const vrseg_trt_blob* blob);
void vrseg_trt_blob_destroy(vrseg_trt_blob* blob);

#ifdef __cplusplus
}
#endif

#endif /* VRSEG_TENSORRT_SHIM_H */
