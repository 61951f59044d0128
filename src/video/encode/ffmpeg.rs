//! The CPU fallback: frames piped as raw yuv420p into an `ffmpeg` on PATH (libx265 or
//! libx264, no B-frames), its Annex-B elementary stream read back and cut into access units.
//!
//! Frames are converted to planar 4:2:0 here (gray: the plane plus constant 128 chroma; NV12:
//! chroma de-interleaved; odd sizes padded by repeating the last column/row), so ffmpeg's
//! scaler never touches the samples: letting it convert `gray` itself would squeeze full-range
//! values into 16–235 while the stream says full range.
//!
//! Threads: the caller writes frames to ffmpeg's stdin (blocking when ffmpeg is busy: that is
//! the backpressure); one thread reads stdout and cuts access units, one keeps the tail of
//! stderr for messages. The access units wait in a channel whose length is bounded by the
//! frames inside ffmpeg (each frame gives at most one unit, and the caller writes the next
//! frame only after taking what is ready), not by a capacity.
//!
//! Failure handling: a missing ffmpeg or encoder is found before any frame (`-encoders`);
//! ffmpeg dying shows up as a broken pipe or an early end of its output, reported with the
//! frame number, its exit status and the last lines it printed.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::host::HostFrame;
use super::{nv12_chroma_row_bytes, EncodeError, EncoderSettings, FrameEncoder, InputFrame, PixelFormat};
use crate::video::chunk::VideoCodec;
use crate::video::mux::bitstream::{AccessUnit, AccessUnitSplitter};
use crate::video::mux::EncodedPacket;

/// How much of ffmpeg's stderr is kept for messages.
const STDERR_TAIL: usize = 2048;

/// Finds ffmpeg: `VRSEG_FFMPEG` when set, else the first `ffmpeg` on PATH.
pub fn find_ffmpeg() -> Result<PathBuf, EncodeError> {
    if let Some(path) = std::env::var_os("VRSEG_FFMPEG") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(EncodeError::FfmpegNotFound { searched: format!("VRSEG_FFMPEG={}", path.display()) })
        };
    }
    find_ffmpeg_in(&std::env::var_os("PATH").unwrap_or_default())
}

/// The first executable `ffmpeg` in the directories of a PATH-style list.
pub fn find_ffmpeg_in(path_var: &std::ffi::OsStr) -> Result<PathBuf, EncodeError> {
    let dirs: Vec<PathBuf> = std::env::split_paths(path_var).collect();
    for dir in &dirs {
        let candidate = dir.join("ffmpeg");
        if is_executable(&candidate) {
            return Ok(candidate);
        }
    }
    let searched = if dirs.is_empty() {
        "an empty PATH".to_string()
    } else {
        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(":")
    };
    Err(EncodeError::FfmpegNotFound { searched })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The libav encoder for a codec.
fn encoder_name(codec: VideoCodec) -> &'static str {
    match codec {
        VideoCodec::H264 => "libx264",
        _ => "libx265",
    }
}

/// Checks that `ffmpeg -encoders` lists `encoder`.
fn check_encoder(ffmpeg: &Path, encoder: &'static str) -> Result<(), EncodeError> {
    let out =
        Command::new(ffmpeg).args(["-hide_banner", "-nostdin", "-encoders"]).stdin(Stdio::null()).output().map_err(
            |e| EncodeError::Ffmpeg {
                ffmpeg: ffmpeg.display().to_string(),
                frame: 0,
                reason: format!("cannot run it: {e}"),
                stderr: String::new(),
            },
        )?;
    let listed =
        String::from_utf8_lossy(&out.stdout).lines().any(|line| line.split_whitespace().nth(1) == Some(encoder));
    if listed {
        Ok(())
    } else {
        Err(EncodeError::FfmpegMissingEncoder { ffmpeg: ffmpeg.display().to_string(), encoder })
    }
}

/// What the stdout reader sends.
enum FromReader {
    Unit(AccessUnit),
    /// ffmpeg closed its output (all units sent before this).
    End,
    Failed(std::io::Error),
}

/// The ffmpeg fallback encoder; see the module docs.
pub struct FfmpegEncoder {
    ffmpeg: PathBuf,
    settings: EncoderSettings,
    coded: (u32, u32),
    child: Child,
    stdin: Option<ChildStdin>,
    units: Receiver<FromReader>,
    reader: Option<JoinHandle<()>>,
    stderr_tail: Arc<Mutex<VecDeque<u8>>>,
    stderr_reader: Option<JoinHandle<()>>,
    /// pts of frames given whose packets have not come out yet.
    pending_pts: VecDeque<i64>,
    host: HostFrame,
    planar: Vec<u8>,
    frames_in: u64,
    packets_out: u64,
    ended: bool,
}

impl std::fmt::Debug for FfmpegEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FfmpegEncoder")
            .field("ffmpeg", &self.ffmpeg)
            .field("frames_in", &self.frames_in)
            .field("packets_out", &self.packets_out)
            .finish_non_exhaustive()
    }
}

impl FfmpegEncoder {
    /// Finds ffmpeg ([`find_ffmpeg`]), checks its encoder, and starts it.
    pub fn open(settings: &EncoderSettings) -> Result<FfmpegEncoder, EncodeError> {
        Self::open_with(&find_ffmpeg()?, settings)
    }

    /// Checks `ffmpeg`'s encoder and starts it.
    pub fn open_with(ffmpeg: &Path, settings: &EncoderSettings) -> Result<FfmpegEncoder, EncodeError> {
        settings.validate()?;
        let ffmpeg = ffmpeg.to_path_buf();
        let encoder = encoder_name(settings.codec);
        check_encoder(&ffmpeg, encoder)?;
        let coded = settings.coded_size();
        let size = format!("{}x{}", coded.0, coded.1);
        let rate = format!("{}/{}", settings.frame_rate.0, settings.frame_rate.1);
        let quality = settings.quality.to_string();
        let keyint = settings.keyframe_interval;
        let mut cmd = Command::new(&ffmpeg);
        cmd.args(["-hide_banner", "-nostdin", "-nostats", "-loglevel", "error"]);
        cmd.args(["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", &size, "-framerate", &rate, "-i", "pipe:0"]);
        cmd.args(["-an", "-sn", "-dn", "-map_metadata", "-1"]);
        cmd.args(["-c:v", encoder, "-preset", &settings.cpu_preset, "-crf", &quality]);
        let x265_params;
        match settings.codec {
            VideoCodec::H264 => {
                let g = keyint.to_string();
                cmd.args(["-bf", "0", "-g", &g, "-keyint_min", &g, "-sc_threshold", "0"]);
                cmd.args(["-x264-params", "open-gop=0"]);
            }
            _ => {
                // No B-frames, closed GOPs at a fixed interval, no scene-cut keyframes.
                x265_params =
                    format!("bframes=0:keyint={keyint}:min-keyint={keyint}:scenecut=0:open-gop=0:log-level=error");
                cmd.args(["-x265-params", &x265_params]);
            }
        }
        if settings.full_range {
            cmd.args(["-color_range", "pc"]);
        }
        // One packet per frame, in order, whatever the timestamps.
        cmd.args(["-fps_mode", "passthrough"]);
        cmd.args(["-f", if settings.codec == VideoCodec::H264 { "h264" } else { "hevc" }, "pipe:1"]);
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| EncodeError::Ffmpeg {
            ffmpeg: ffmpeg.display().to_string(),
            frame: 0,
            reason: format!("cannot start it: {e}"),
            stderr: String::new(),
        })?;
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().expect("stdout was piped");
        let mut stderr = child.stderr.take().expect("stderr was piped");

        let (tx, units) = channel();
        let codec = settings.codec;
        let reader = std::thread::Builder::new()
            .name("ffmpeg-stdout".into())
            .spawn(move || {
                let mut splitter = AccessUnitSplitter::new(codec);
                let mut buf = vec![0u8; 1 << 16];
                let mut done = Vec::new();
                loop {
                    match stdout.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            splitter.push(&buf[..n], &mut done);
                            for au in done.drain(..) {
                                if tx.send(FromReader::Unit(au)).is_err() {
                                    return;
                                }
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = tx.send(FromReader::Failed(e));
                            return;
                        }
                    }
                }
                splitter.finish(&mut done);
                for au in done.drain(..) {
                    let _ = tx.send(FromReader::Unit(au));
                }
                let _ = tx.send(FromReader::End);
            })
            .map_err(|e| EncodeError::Ffmpeg {
                ffmpeg: ffmpeg.display().to_string(),
                frame: 0,
                reason: format!("cannot start its reader thread: {e}"),
                stderr: String::new(),
            })?;
        let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
        let tail = Arc::clone(&stderr_tail);
        let stderr_reader = std::thread::Builder::new()
            .name("ffmpeg-stderr".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stderr.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let mut t = tail.lock().unwrap_or_else(|p| p.into_inner());
                    t.extend(&buf[..n]);
                    while t.len() > STDERR_TAIL {
                        t.pop_front();
                    }
                }
            })
            .ok();
        let (w, h) = (settings.width, settings.height);
        Ok(FfmpegEncoder {
            ffmpeg,
            settings: settings.clone(),
            coded,
            child,
            stdin,
            units,
            reader: Some(reader),
            stderr_tail,
            stderr_reader,
            pending_pts: VecDeque::new(),
            host: HostFrame::new(w, h, settings.input),
            planar: vec![0; coded.0 as usize * coded.1 as usize * 3 / 2],
            frames_in: 0,
            packets_out: 0,
            ended: false,
        })
    }

    /// Bytes copied from device memory so far (the fallback's inherent PCIe traffic).
    pub fn bytes_from_device(&self) -> u64 {
        self.host.bytes_from_device()
    }

    /// The error for ffmpeg failing at `frame`: waits for it to exit, adds its status and
    /// the last lines it printed.
    fn failure(&mut self, frame: u64, reason: String) -> EncodeError {
        drop(self.stdin.take());
        let status = match self.child.try_wait() {
            Ok(Some(s)) => Some(s),
            Ok(None) => {
                // Give it a moment to exit on its own after a broken pipe, then stop it.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                loop {
                    match self.child.try_wait() {
                        Ok(Some(s)) => break Some(s),
                        Ok(None) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(std::time::Duration::from_millis(20))
                        }
                        _ => {
                            let _ = self.child.kill();
                            break self.child.wait().ok();
                        }
                    }
                }
            }
            Err(_) => None,
        };
        if let Some(h) = self.stderr_reader.take() {
            let _ = h.join();
        }
        let tail = {
            let t = self.stderr_tail.lock().unwrap_or_else(|p| p.into_inner());
            String::from_utf8_lossy(&t.iter().copied().collect::<Vec<u8>>()).trim().to_string()
        };
        let reason = match status {
            Some(s) if !s.success() => format!("{reason} (ffmpeg exited with {s})"),
            _ => reason,
        };
        self.ended = true;
        EncodeError::Ffmpeg {
            ffmpeg: self.ffmpeg.display().to_string(),
            frame,
            reason,
            stderr: if tail.is_empty() { String::new() } else { format!("; ffmpeg said: {tail}") },
        }
    }

    /// Turns an access unit into a packet with the oldest pending pts.
    fn packet(&mut self, au: AccessUnit) -> Result<EncodedPacket, EncodeError> {
        let Some(pts) = self.pending_pts.pop_front() else {
            let n = self.packets_out + 1;
            return Err(
                self.failure(self.frames_in, format!("it returned picture {n} for {} frames given", self.frames_in))
            );
        };
        self.packets_out += 1;
        Ok(EncodedPacket { data: au.data, pts, keyframe: au.random_access })
    }

    /// Takes every unit that is ready without waiting.
    fn drain_ready(&mut self, out: &mut Vec<EncodedPacket>) -> Result<(), EncodeError> {
        loop {
            match self.units.try_recv() {
                Ok(FromReader::Unit(au)) => {
                    let p = self.packet(au)?;
                    out.push(p);
                }
                Ok(FromReader::End) => {
                    self.ended = true;
                    return Err(self.failure(self.frames_in, "it ended its output before the input ended".into()));
                }
                Ok(FromReader::Failed(e)) => {
                    return Err(self.failure(self.frames_in, format!("reading its output failed: {e}")))
                }
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => {
                    return Err(self.failure(self.frames_in, "its output reader stopped".into()))
                }
            }
        }
    }
}

/// Builds a planar yuv420p frame of the coded size from a packed gray or NV12 frame,
/// repeating the last column/row into padding.
fn to_yuv420p(src: &[u8], format: PixelFormat, w: usize, h: usize, coded: (usize, usize), dst: &mut [u8]) {
    let (cw, ch) = coded;
    for y in 0..ch {
        let sy = y.min(h - 1);
        let row = &src[sy * w..sy * w + w];
        let out = &mut dst[y * cw..y * cw + cw];
        out[..w].copy_from_slice(row);
        let last = row[w - 1];
        out[w..].fill(last);
    }
    let (cwc, chc) = (cw / 2, ch / 2);
    let (u_at, v_at) = (cw * ch, cw * ch + cwc * chc);
    match format {
        PixelFormat::Gray8 => dst[u_at..].fill(128),
        PixelFormat::Nv12 => {
            let chroma_row = nv12_chroma_row_bytes(w as u32);
            let (sw, sh) = (w.div_ceil(2), h.div_ceil(2));
            let chroma = &src[w * h..];
            for y in 0..chc {
                let sy = y.min(sh - 1);
                for x in 0..cwc {
                    let sx = x.min(sw - 1);
                    dst[u_at + y * cwc + x] = chroma[sy * chroma_row + 2 * sx];
                    dst[v_at + y * cwc + x] = chroma[sy * chroma_row + 2 * sx + 1];
                }
            }
        }
    }
}

impl FrameEncoder for FfmpegEncoder {
    fn name(&self) -> String {
        format!("ffmpeg {}", encoder_name(self.settings.codec))
    }

    fn codec(&self) -> VideoCodec {
        self.settings.codec
    }

    fn coded_size(&self) -> (u32, u32) {
        self.coded
    }

    fn parameter_sets(&self) -> Vec<Vec<u8>> {
        Vec::new()
    }

    fn encode(&mut self, frame: &InputFrame, out: &mut Vec<EncodedPacket>) -> Result<(), EncodeError> {
        let index = self.frames_in;
        if self.ended {
            return Err(self.failure(index, "it has already stopped".into()));
        }
        self.drain_ready(out)?;
        let (w, h) = (self.settings.width as usize, self.settings.height as usize);
        let coded = (self.coded.0 as usize, self.coded.1 as usize);
        let packed = self.host.fill(frame, index)?;
        to_yuv420p(packed, self.settings.input, w, h, coded, &mut self.planar);
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(self.failure(index, "its input is already closed".into()));
        };
        if let Err(e) = stdin.write_all(&self.planar) {
            let reason = if e.kind() == std::io::ErrorKind::BrokenPipe {
                "it stopped reading frames (broken pipe)".to_string()
            } else {
                format!("writing the frame to it failed: {e}")
            };
            return Err(self.failure(index, reason));
        }
        self.pending_pts.push_back(frame.pts);
        self.frames_in += 1;
        self.drain_ready(out)
    }

    fn finish(&mut self, out: &mut Vec<EncodedPacket>) -> Result<(), EncodeError> {
        if let Some(mut stdin) = self.stdin.take() {
            if let Err(e) = stdin.flush() {
                return Err(self.failure(self.frames_in, format!("flushing its input failed: {e}")));
            }
        }
        while !self.ended {
            match self.units.recv() {
                Ok(FromReader::Unit(au)) => {
                    let p = self.packet(au)?;
                    out.push(p);
                }
                Ok(FromReader::End) => self.ended = true,
                Ok(FromReader::Failed(e)) => {
                    return Err(self.failure(self.frames_in, format!("reading its output failed: {e}")))
                }
                Err(_) => return Err(self.failure(self.frames_in, "its output reader stopped".into())),
            }
        }
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
        let status = self.child.wait().map_err(|e| EncodeError::Ffmpeg {
            ffmpeg: self.ffmpeg.display().to_string(),
            frame: self.frames_in,
            reason: format!("waiting for it failed: {e}"),
            stderr: String::new(),
        })?;
        if !status.success() {
            self.ended = false;
            return Err(self.failure(self.frames_in, "it failed at the end of the stream".into()));
        }
        if self.packets_out != self.frames_in {
            let reason = format!("it returned {} pictures for {} frames", self.packets_out, self.frames_in);
            return Err(self.failure(self.frames_in, reason));
        }
        Ok(())
    }
}

impl Drop for FfmpegEncoder {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
        if let Some(h) = self.stderr_reader.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuv420p_from_gray_and_nv12_with_odd_padding() {
        // 3 x 3 gray → 4 x 4: the last column and row repeat; chroma 2 x 2 of 128.
        let gray = [1u8, 2, 3, 4, 5, 6, 7, 8, 9];
        let mut dst = vec![0u8; 4 * 4 * 3 / 2];
        to_yuv420p(&gray, PixelFormat::Gray8, 3, 3, (4, 4), &mut dst);
        assert_eq!(&dst[..16], &[1, 2, 3, 3, 4, 5, 6, 6, 7, 8, 9, 9, 7, 8, 9, 9]);
        assert!(dst[16..].iter().all(|&b| b == 128));
        // 2 x 2 NV12: luma 4 bytes, one chroma row (U, V).
        let nv12 = [10u8, 11, 12, 13, 100, 200];
        let mut dst = vec![0u8; 6];
        to_yuv420p(&nv12, PixelFormat::Nv12, 2, 2, (2, 2), &mut dst);
        assert_eq!(dst, [10, 11, 12, 13, 100, 200]);
    }
}
