#!/usr/bin/env bash
# Makes the demux test clips with ffmpeg and writes golden facts beside each one from ffprobe.
#
# Usage: tools/make-clips.sh [OUT_DIR]
#   OUT_DIR defaults to tests/data/generated (git-ignored). The committed fixtures in
#   tests/data/clips were made with `tools/make-clips.sh tests/data/clips`.
#
# Reproducible: every clip comes from lavfi testsrc2/sine with fixed sizes, rates and frame
# counts, single-threaded encoders, and no muxer timestamps or encoder version strings
# (-fflags +bitexact). Made with Debian 12's ffmpeg 5.1.
#
# Golden facts (CLIP.json): container-independent ffprobe facts about the first video stream:
# codec, profile, width, height, bit depth, time base, frame count, and per packet in decode
# order [pts, dts, duration, keyframe] in the stream time base ("N/A" becomes null).
set -euo pipefail

out="${1:-tests/data/generated}"
mkdir -p "$out"
cd "$out"

ff() { ffmpeg -hide_banner -loglevel error -y "$@"; }
src() { # size rate
    echo -f lavfi -i "testsrc2=size=$1:rate=$2"
}
bitexact=(-fflags +bitexact -flags:v +bitexact -map_metadata -1)
x264=(-c:v libx264 -preset veryfast -crf 35 -g 6 -threads 1 -x264-params "threads=1")
x265=(-c:v libx265 -preset veryfast -crf 35 -g 6 -x265-params "log-level=error:pools=1:frame-threads=1")

# H.264 with B-frames (x264 defaults: 3 B-frames, so ffmpeg writes ctts and an edit list).
ff $(src 256x128 30) -frames:v 12 "${x264[@]}" "${bitexact[@]}" h264_bframes_moov_end.mp4
ff $(src 256x128 30) -frames:v 12 "${x264[@]}" "${bitexact[@]}" -movflags +faststart h264_faststart.mp4
ff $(src 256x128 30) -frames:v 12 "${x264[@]}" "${bitexact[@]}" -movflags frag_keyframe+empty_moov h264_frag.mp4
ff $(src 256x128 30) -frames:v 12 "${x264[@]}" "${bitexact[@]}" -movflags +negative_cts_offsets h264_negcts.mp4
ff $(src 256x128 30) -frames:v 12 "${x264[@]}" "${bitexact[@]}" h264.mov
# avc3: parameter sets in band, none in avcC arrays required.
ff $(src 256x128 30) -frames:v 6 "${x264[@]}" "${bitexact[@]}" -tag:v avc3 h264_avc3.mp4
# Odd size: 1918x1078 has a cropping window in the SPS; three frames keep it small.
ff $(src 1918x1078 30) -frames:v 3 "${x264[@]}" -crf 45 "${bitexact[@]}" h264_1918x1078_3dh.mp4
# H.264 with AAC audio.
ff $(src 256x128 30) -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=0.4" -frames:v 12 \
    "${x264[@]}" -c:a aac -ac 2 -b:a 32k "${bitexact[@]}" -shortest h264_aac.mp4
# Audio only.
ff -f lavfi -i "sine=frequency=440:sample_rate=44100:duration=0.3" -c:a aac -b:a 32k "${bitexact[@]}" audio_only.m4a

# HEVC: hvc1 (parameter sets only in hvcC), hev1 (in band too), 10-bit with an odd size.
ff $(src 288x144 30) -frames:v 8 "${x265[@]}" "${bitexact[@]}" -tag:v hvc1 hevc_hvc1.mp4
ff $(src 288x144 30) -frames:v 8 "${x265[@]}" "${bitexact[@]}" -tag:v hev1 hevc_hev1.mp4
ff $(src 318x158 30) -frames:v 8 "${x265[@]}" -pix_fmt yuv420p10le "${bitexact[@]}" -tag:v hvc1 hevc_10bit_318x158.mp4

# Open GOPs over several GOPs, for parallel decode (src/video/parallel.rs): x265's default
# open GOP gives a CRA every 16 frames followed in decode order by RASL pictures that
# reference the previous GOP (the first keyframe is an IDR); x264's open-gop gives non-IDR
# I frames (recovery point SEI) with leading B-frames. 100 frames each, 7 GOPs, no scenecut
# so the GOPs are regular.
ff $(src 288x144 30) -frames:v 100 -c:v libx265 -preset veryfast -crf 35 -g 16 \
    -x265-params "log-level=error:pools=1:frame-threads=1:keyint=16:min-keyint=16:scenecut=0:open-gop=1:bframes=3" \
    "${bitexact[@]}" -tag:v hvc1 hevc_opengop.mp4
ff $(src 256x128 30) -frames:v 100 -c:v libx264 -preset veryfast -crf 35 -g 16 -threads 1 \
    -x264-params "threads=1:open-gop=1:keyint=16:min-keyint=16:scenecut=0:bframes=3" "${bitexact[@]}" h264_opengop.mp4

# VP9 profile 2 (10-bit) with an odd size: odd widths/heights exercise the rounded-up chroma
# planes of NV12/P010 (x264/x265 need even sizes for 4:2:0, libvpx does not); at least
# 128x128, NVDEC's VP9 minimum. lavfi sources round sizes to even, hence the scale (and setsar,
# since scale would otherwise keep the display aspect with a 258:259 SAR).
ff $(src 260x148 30) -vf scale=259:147,setsar=1 -frames:v 8 -pix_fmt yuv420p10le \
    -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 100k -g 6 -threads 1 "${bitexact[@]}" vp9_10bit_259x147.webm

# VP9 WebM with Opus audio; AV1 in Matroska.
ff $(src 256x128 30) -f lavfi -i "sine=frequency=440:sample_rate=48000:duration=0.3" -frames:v 8 \
    -c:v libvpx-vp9 -deadline realtime -cpu-used 8 -b:v 100k -g 6 -threads 1 \
    -c:a libopus -b:a 24k "${bitexact[@]}" -shortest vp9_opus.webm
ff $(src 256x128 30) -frames:v 6 -c:v libaom-av1 -cpu-used 8 -crf 50 -g 6 -threads 1 "${bitexact[@]}" av1.mkv
ff $(src 256x128 30) -frames:v 6 -c:v libaom-av1 -cpu-used 8 -crf 50 -g 6 -threads 1 "${bitexact[@]}" av1.mp4

# Matroska written to a pipe: clusters and segment have unknown sizes.
# Matroska to a pipe: ffmpeg 5.1 leaves the Segment size unknown but still sizes each Cluster
# (it buffers clusters), so rewrite every Cluster size field as "unknown" (all ones, same
# length), which is what live muxers (OBS, gstreamer, mkvmerge --cluster-length) produce.
ff $(src 256x128 30) -frames:v 24 "${x264[@]}" "${bitexact[@]}" -cluster_time_limit 200 -f matroska pipe: > h264_unknown_size.mkv
python3 - h264_unknown_size.mkv <<'PY'
import sys
path = sys.argv[1]
d = bytearray(open(path, "rb").read())
def vint(pos):
    n = 1
    while not d[pos] & (0x80 >> (n - 1)):
        n += 1
    v = d[pos] & (0xFF >> n)
    for b in d[pos + 1:pos + n]:
        v = (v << 8) | b
    return v, n
def ident(pos):
    n = 1
    while not d[pos] & (0x80 >> (n - 1)):
        n += 1
    return int.from_bytes(d[pos:pos + n], "big"), n
pos = 0
_, n = ident(pos); size, m = vint(pos + n); pos += n + m + size     # EBML header
_, n = ident(pos); _, m = vint(pos + n); pos += n + m               # Segment (unknown size)
clusters = 0
while pos < len(d):
    eid, n = ident(pos)
    size, m = vint(pos + n)
    if eid == 0x1F43B675:
        d[pos + n] = (0xFF >> (m - 1)) if m > 1 else 0xFF
        for i in range(1, m):
            d[pos + n + i] = 0xFF
        clusters += 1
    pos += n + m + size
assert clusters >= 2, clusters
open(path, "wb").write(d)
PY
ff $(src 256x128 30) -frames:v 12 "${x264[@]}" "${bitexact[@]}" h264.mkv
ff $(src 288x144 30) -frames:v 8 "${x265[@]}" "${bitexact[@]}" hevc.mkv

# Stereo metadata that contradicts the 2:1 aspect, so a test can tell metadata won.
ff $(src 256x128 30) -frames:v 6 "${x264[@]}" "${bitexact[@]}" -metadata:s:v:0 stereo_mode=top_bottom stereo_meta.mkv
# MP4 st3d: ffmpeg 5.1 writes st3d from stereo3d side data (which the Matroska demuxer sets
# from StereoMode) only with -strict unofficial.
ff $(src 256x128 30) -frames:v 6 "${x264[@]}" "${bitexact[@]}" -metadata:s:v:0 stereo_mode=left_right st3d_src.mkv
ff -i st3d_src.mkv -c copy "${bitexact[@]}" -strict unofficial stereo_meta_st3d.mp4
rm st3d_src.mkv

# Raw Annex-B elementary streams.
ff $(src 256x128 30) -frames:v 12 "${x264[@]}" "${bitexact[@]}" -f h264 h264_raw.h264
ff $(src 288x144 30) -frames:v 8 "${x265[@]}" "${bitexact[@]}" -f hevc hevc_raw.hevc

# Golden facts.
for clip in *.mp4 *.mov *.mkv *.webm *.h264 *.hevc; do
    [ -e "$clip" ] || continue
    ffprobe -v error -select_streams v:0 -show_streams -show_packets -of json "$clip" | python3 -c '
import json, sys
d = json.load(sys.stdin)
s = d["streams"][0]
def num(v):
    return None if v in (None, "N/A") else int(v)
pix = s.get("pix_fmt", "")
depth = int(s["bits_per_raw_sample"]) if s.get("bits_per_raw_sample", "N/A") not in ("N/A", "") else (10 if "10" in pix else 12 if "12" in pix else 8)
packets = [[num(p.get("pts")), num(p.get("dts")), num(p.get("duration")), "K" in p.get("flags", "")] for p in d["packets"]]
golden = {
    "file": sys.argv[1],
    "codec": s["codec_name"],
    "profile": s.get("profile"),
    "width": s["width"],
    "height": s["height"],
    "bit_depth": depth,
    "pix_fmt": pix,
    "time_base": s["time_base"],
    "frames": len(packets),
    "packets": packets,
}
json.dump(golden, sys.stdout, indent=1)
print()
' "$clip" > "$clip.json"
done
# Golden per-frame hashes (framemd5/CLIP.framemd5) for every clip NVDEC decodes (H.264 8-bit,
# HEVC 8/10-bit, VP9 8/10-bit; not AV1, which NVDEC lacks on the GPUs we target): ffmpeg's
# software decode of the first video stream, converted to the packed layout our decoder
# hands to the host (nv12 for 8-bit, p010le for 10-bit), one MD5 per frame in presentation
# order. The dts/pts/duration columns are in the *output* stream time base, which ffmpeg sets
# to 1/frame-rate for rawvideo (`#tb 0: 1/30`), so they count frames, not container ticks;
# compare our decoder's frames by order and hash, not by container timestamps. +bitexact
# drops the `#software: Lavf…` line so the files do not depend on the ffmpeg build.
# They live in a subdirectory because the demux tests treat every file beside the clips
# (other than .json/.m4a) as a clip.
mkdir -p framemd5
rm -f framemd5/*.framemd5
for clip in *.mp4 *.mov *.mkv *.webm *.h264 *.hevc; do
    [ -e "$clip" ] || continue
    codec=$(ffprobe -v error -select_streams v:0 -show_entries stream=codec_name -of default=nw=1:nk=1 "$clip")
    [ "$codec" = av1 ] && continue
    pix=$(ffprobe -v error -select_streams v:0 -show_entries stream=pix_fmt -of default=nw=1:nk=1 "$clip")
    case "$pix" in
        yuv420p) packed=nv12 ;;
        yuv420p10le) packed=p010le ;;
        *) echo "make-clips: $clip has pix_fmt $pix, no packed layout for it" >&2; exit 1 ;;
    esac
    ff -threads 1 -i "$clip" -map 0:v:0 -pix_fmt "$packed" -fflags +bitexact -f framemd5 "framemd5/$clip.framemd5"
    [ "$packed" = p010le ] || continue
    # ffmpeg 5.1's swscale drops the last U/V pair of every chroma row when it writes p010le
    # at an odd width (zeros instead of samples), so for 10-bit clips the hashes come from the
    # decoder's own yuv420p10le frames repacked to P010 here; ffmpeg supplies the header and
    # timestamps. At even widths the result must equal ffmpeg's p010le lines, which checks
    # the repacking.
    ff -threads 1 -i "$clip" -map 0:v:0 -pix_fmt yuv420p10le -f rawvideo framemd5/planar.tmp
    python3 - "framemd5/$clip.framemd5" framemd5/planar.tmp <<'PY'
import hashlib, re, struct, sys
golden_path, planar_path = sys.argv[1], sys.argv[2]
lines = open(golden_path).read().splitlines()
w, h = map(int, next(l for l in lines if l.startswith("#dimensions 0: ")).split(": ")[1].split("x"))
cw, ch = (w + 1) // 2, (h + 1) // 2
frame_len = (w * h + 2 * cw * ch) * 2
data = open(planar_path, "rb").read()
frames = [data[i:i + frame_len] for i in range(0, len(data), frame_len)]
out, n = [], 0
for line in lines:
    if line.startswith("#"):
        out.append(line)
        continue
    f = frames[n]
    n += 1
    y = struct.unpack("<%dH" % (w * h), f[:w * h * 2])
    u = struct.unpack("<%dH" % (cw * ch), f[w * h * 2:(w * h + cw * ch) * 2])
    v = struct.unpack("<%dH" % (cw * ch), f[(w * h + cw * ch) * 2:])
    uv = [s for pair in zip(u, v) for s in pair]
    p010 = struct.pack("<%dH" % len(y), *[s << 6 for s in y]) + struct.pack("<%dH" % len(uv), *[s << 6 for s in uv])
    fields = [x.strip() for x in line.split(",")]
    new = "%s, %10s, %10s, %8s, %8d, %s" % (fields[0], fields[1], fields[2], fields[3], len(p010), hashlib.md5(p010).hexdigest())
    if w % 2 == 0:
        assert new == line, (golden_path, line, new)
    out.append(new)
assert n == len(frames), (golden_path, n, len(frames))
open(golden_path, "w").write("\n".join(out) + "\n")
PY
    rm framemd5/planar.tmp
done
ls -l . framemd5
