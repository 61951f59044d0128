/* Input to tools/gen-codec-bindings.sh: the Video Codec SDK API as FFmpeg's
 * nv-codec-headers (Debian: libffmpeg-nvenc-dev) declare it for run-time
 * loading. dynlink_cuda.h supplies the few CUDA driver types the SDK names. */
#include <ffnvcodec/dynlink_cuda.h>
#include <ffnvcodec/dynlink_nvcuvid.h>
#include <ffnvcodec/nvEncodeAPI.h>
