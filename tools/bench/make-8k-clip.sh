#!/usr/bin/env bash
# Makes the decode benchmark's input: 8192x4096 side-by-side HEVC 8-bit
# (Main profile, 4:2:0) at about 60 Mbit/s, 30 fps, like a VR180 camera file.
# Content: two eyes of moving test pattern with film-like noise, so the
# encoder spends the bitrate everywhere (a flat picture would decode faster
# than real footage). Usage: tools/bench/make-8k-clip.sh [OUT.mp4] [SECONDS]
# Default: target/bench/sbs-8k-hevc8.mp4, 3 s (90 frames, about 22 MB).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/bench/sbs-8k-hevc8_LR.mp4}
seconds=${2:-3}
mkdir -p "$(dirname "$out")"
command -v ffmpeg >/dev/null || { echo "make-8k-clip: ffmpeg not found; install it (apt-get install ffmpeg)" >&2; exit 1; }
# One eye is 4096x4096; the right eye is the left one shifted by 24 px
# (a plausible disparity), so the two halves differ as real stereo does.
ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc2=size=4096x4096:rate=30:duration=${seconds}" \
    -filter_complex "[0:v]noise=alls=12:allf=t,format=yuv420p,split[l][r0];[r0]crop=4072:4096:0:0,pad=4096:4096:24:0[r];[l][r]hstack=inputs=2[v]" \
    -map "[v]" -c:v libx265 -preset ultrafast -tag:v hvc1 \
    -x265-params "log-level=error:bitrate=60000:vbv-maxrate=66000:vbv-bufsize=120000:keyint=30:bframes=3" \
    -pix_fmt yuv420p "$out.tmp.mp4"
mv "$out.tmp.mp4" "$out"
ffprobe -v error -select_streams v:0 -show_entries stream=codec_name,width,height,nb_frames,bit_rate -of compact "$out"
