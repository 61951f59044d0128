//! Parallel decode across NVDEC engines: one file split at keyframes into
//! chunks, decoded on K NVDEC sessions at once (one thread and one CUDA stream
//! each), frames handed on strictly in presentation order.
//!
//! Datacenter GPUs have several NVDEC engines (H100 7, A100 5, L4 4) and the
//! driver spreads sessions over them; one session is bound to one engine's
//! rate. A file's GOPs are independent once a decoder starts at their
//! keyframe, so K sessions can decode K chunks at the same time.
//!
//! # Chunks ([`plan_chunks`])
//! Chunks start at keyframes (several short GOPs are merged into one chunk of
//! at least `min_chunk_frames` samples). Every sample has a presentation
//! *rank*: its place among all samples sorted by pts, which is the order the
//! consumer gets frames in and the frame index single-session decoding gives
//! it. Each rank is *owned* by exactly one chunk, which delivers it; what a
//! session decodes and does not own is discarded.
//!
//! Open GOPs: after a keyframe that is not an IDR (an HEVC CRA, x265's
//! default; an H.264 I frame with a recovery point, x264's open-gop), the
//! next samples in decode order may be *leading* pictures, displayed before
//! the keyframe (pts lower than the keyframe's) and, for RASL pictures,
//! predicted from the previous GOP. A decoder started at the keyframe cannot
//! decode them. They need a pre-roll from the previous keyframe, and the
//! previous chunk's session has exactly that: it has decoded from the
//! previous keyframe up to this one. So a chunk's session feeds on past its
//! end through the next chunk's keyframe and leading pictures (its *tail*)
//! and delivers those leading pictures; the next chunk's session decodes
//! them too (from its own start, wrongly where they are RASL) and discards
//! them. The output is the one a single session decoding the whole file
//! produces, at the cost of the keyframe and its leading pictures decoded
//! twice (4 pictures per GOP for x265's default), instead of a whole GOP of
//! pre-roll; for HEVC, whose trailing pictures never reference leading ones,
//! the next chunk's session is not fed them at all, which also keeps NVDEC's
//! parser from dropping the CRA it starts at ([`skips_leading_pictures`]).
//! Closed GOPs have no leading pictures and so no tail. Leading
//! pictures are found from the sample index (pts below the keyframe's pts),
//! which also covers RADL pictures and any GOP whose display order crosses
//! its decode-order boundary: ownership and ranks are per sample, so
//! pictures of neighbouring chunks may interleave in presentation order.
//!
//! Raw Annex-B files have no presentation times (their pts are decode order)
//! and files whose samples share a pts cannot be ranked: those decode on one
//! session, and [`ParallelSetup::note`] says why.
//!
//! # Order and memory ([`ReorderWindow`])
//! Sessions take chunks in order; each decoded picture it owns waits for a
//! place in a window of `W` ranks starting at the next rank the consumer
//! needs, then is copied into a frame slot, so at most `W` frames wait in
//! the window. The bound for K sessions is therefore
//! `W × frame bytes + K × (NVDEC surfaces of one session)`; both are reported
//! ([`ParallelReport`]). Chunk order and rank order agree except where
//! leading pictures cross a boundary, so the window never deadlocks when it
//! is larger than that crossing ([`ChunkPlan::min_window`]).
//!
//! How large `W` must be for the sessions to overlap: the window bounds the
//! *span* of ranks ahead of the consumer, not only how many frames wait. A
//! session may decode a frame only once the frame's rank lies within `W` of
//! the consumer's next rank, so the session working on chunk c + K − 1 while
//! the consumer still waits for chunk c needs a span of about K·G ranks for
//! chunks of G frames, and at the start all K sessions decode at once while
//! the consumer waits for the whole first chunk, whose session runs at one
//! engine's rate: the other K − 1 chunks then wait complete, (K − 1)·G
//! frames. [`default_window`] gives that, (K − 1)·G + 4·K places, capped by a
//! VRAM budget. With ⌈G/2⌉ + 4 places per session (this module's first
//! default, from the mean number of frames the staggered sessions hold)
//! the sessions of the last chunks in the span stalled: 7 sessions on the
//! H100 reached 390 frames/s where the engines decode about 470. A smaller
//! window stays correct and bounded; the sessions then stall more, down to
//! the single-session rate.
//!
//! Sessions are created on their own threads, all at once, and take chunks
//! in order as they come free; a session with no chunk left is torn down at
//! once on its own thread while the others still decode. NVDEC's set-up and
//! teardown are slow and partly serialised by the driver: on the H100
//! (driver 580), with 7 sessions starting together, `cuvidCreateDecoder`
//! took 0.15-0.52 s each, and tearing the 7 down one after the other after
//! the last frame took 0.42 s. The consumer hears the end (`drained`) as
//! soon as it has the last frame, before the last sessions finish tearing
//! down (0.17 s on the H100 at 8K): `vrseg run` finishes its output
//! meanwhile. The report says when each session was ready,
//! gave its first frame, finished and was torn down, and how long it waited
//! for room in the window ([`SessionTiming`], [`NvdecSessionTiming`]).

use std::cell::RefCell;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use cudarc::driver::CudaStream;

use super::chunk::{StreamInfo, VideoCodec};
use super::demux::{Container, DemuxError, Demuxer};
use super::nvdec::decoder::nvdec_codec;
use super::nvdec::{query_caps, FrameLayout, MappedPicture, NvDecoder, NvdecError, PictureStatus};
use crate::gpu::nvtx::{self, Stage};
use crate::gpu::pool::{Slot, SlotRing};
use crate::gpu::{Gpu, GpuError};

/// Chunks shorter than this many samples are merged with the next GOP (for
/// all-intra or very short GOPs, where a restart per GOP would cost more
/// than it wins).
pub const MIN_CHUNK_FRAMES: usize = 8;

/// Window places each session gets beyond half a chunk.
const WINDOW_SLACK_PER_SESSION: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ParallelError {
    #[error(transparent)]
    Demux(#[from] DemuxError),
    #[error(transparent)]
    Nvdec(#[from] NvdecError),
    #[error(transparent)]
    Gpu(#[from] GpuError),
    #[error(
        "{label}: the decoder displayed the picture with pts {pts} after one with a later pts, so the file's \
         presentation times disagree with its display order and it cannot be split across decoders; decode it \
         with --decoders 1"
    )]
    DisplayOrder { label: String, pts: i64 },
    #[error(
        "{label}: parallel decode needs a reorder window of at least {need} frames ({need_gib:.2} GiB) because \
         pictures cross chunk boundaries that far, more than the {budget_gib:.2} GiB allowed; decode it with \
         --decoders 1"
    )]
    WindowTooSmall { label: String, need: usize, need_gib: f64, budget_gib: f64 },
    #[error("--decoders {0}: the number of decoder sessions is at least 1")]
    NoDecoders(usize),
    /// A decoder behind [`ChunkDecoder`] other than NVDEC failed (the tests' model codec).
    #[error("{0}")]
    Decoder(String),
}

/// One sample as the planner sees it (decode order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleTiming {
    pub pts: i64,
    pub keyframe: bool,
}

/// The samples of a demuxed file, for [`plan_chunks`].
pub fn sample_timings(demuxer: &Demuxer) -> Vec<SampleTiming> {
    let mut timings: Vec<SampleTiming> =
        demuxer.pts_list().into_iter().map(|pts| SampleTiming { pts, keyframe: false }).collect();
    for k in demuxer.keyframe_indices() {
        timings[k as usize].keyframe = true;
    }
    timings
}

/// One chunk: what its session feeds and what it delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkSpec {
    /// Decode-order samples fed to a fresh decoder: from the chunk's keyframe
    /// to the next chunk's keyframe, plus that keyframe and its leading
    /// pictures when it has any (the tail).
    pub feed: Range<u64>,
    /// Samples of `feed` not fed: the chunk's own leading pictures, where the
    /// codec lets trailing pictures never reference them (HEVC); empty otherwise.
    pub skip: Range<u64>,
    /// Presentation ranks this chunk delivers, ascending: its samples except
    /// its own leading pictures, plus the next keyframe's leading pictures,
    /// within the requested frames.
    pub ranks: Vec<u64>,
}

/// The split of one file, from [`plan_chunks`].
#[derive(Debug, Clone)]
pub struct ChunkPlan {
    /// Chunks that deliver at least one requested frame, in decode order.
    pub chunks: Vec<ChunkSpec>,
    /// Every sample's pts, ascending: index = rank.
    rank_pts: Vec<i64>,
    /// Per rank, the index in `chunks` of the chunk delivering it, or
    /// `u32::MAX` outside the requested frames.
    rank_chunk: Vec<u32>,
    /// The requested ranks: `first..end`.
    pub first: u64,
    pub end: u64,
    /// Chunk boundaries whose keyframe has leading pictures (decoded in the previous chunk's tail).
    pub open_boundaries: usize,
    /// The most frames any chunk delivers.
    pub max_chunk_frames: usize,
    /// The smallest window that cannot deadlock: 1 plus the furthest an
    /// earlier chunk's rank lies beyond the first rank of a later one.
    pub min_window: usize,
}

impl ChunkPlan {
    /// The rank of a displayed picture, from its pts.
    pub fn rank_of_pts(&self, pts: i64) -> Option<u64> {
        self.rank_pts.binary_search(&pts).ok().map(|r| r as u64)
    }

    /// Which chunk delivers `rank` (None outside the requested frames).
    pub fn chunk_of_rank(&self, rank: u64) -> Option<usize> {
        self.rank_chunk.get(rank as usize).filter(|&&c| c != u32::MAX).map(|&c| c as usize)
    }

    /// Number of requested frames.
    pub fn frames(&self) -> u64 {
        self.end - self.first
    }
}

/// Splits a file's samples (decode order) into chunks at keyframes; see the
/// module documentation. `first_pts` drops frames presented before it and
/// `max_frames` keeps that many from there (`vrseg run --start/--frames`);
/// chunks that deliver none of them are left out. With `skip_leading`
/// (see [`skips_leading_pictures`]) a chunk's session is not fed its own
/// leading pictures, which directly follow its keyframe in decode order and
/// are delivered by the previous chunk. Err says, in a sentence, why the
/// file cannot be split (it then decodes on one session).
pub fn plan_chunks(
    samples: &[SampleTiming],
    min_chunk_frames: usize,
    first_pts: Option<i64>,
    max_frames: Option<u64>,
    skip_leading: bool,
) -> Result<ChunkPlan, String> {
    let n = samples.len();
    if n == 0 {
        return Err("the file has no video samples".into());
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| samples[i].pts);
    if let Some(w) = order.windows(2).find(|w| samples[w[0]].pts == samples[w[1]].pts) {
        return Err(format!(
            "samples {} and {} share the pts {}, so presentation order is ambiguous",
            w[0].min(w[1]),
            w[0].max(w[1]),
            samples[w[0]].pts
        ));
    }
    let mut rank_of_sample = vec![0u64; n];
    for (rank, &i) in order.iter().enumerate() {
        rank_of_sample[i] = rank as u64;
    }
    let rank_pts: Vec<i64> = order.iter().map(|&i| samples[i].pts).collect();

    // Chunk starts: sample 0 (whatever it is: single-session decoding starts
    // there too), then keyframes at least `min_chunk_frames` after the last start.
    let keyframes: Vec<usize> = (1..n).filter(|&i| samples[i].keyframe).collect();
    let mut starts = vec![0usize];
    for &k in &keyframes {
        if k - starts[starts.len() - 1] >= min_chunk_frames.max(1) {
            starts.push(k);
        }
    }
    // Leading pictures of each start after the first: samples of its GOP
    // (up to the next keyframe of any kind) presented before it.
    let mut owner: Vec<usize> = vec![0; n];
    let mut feed_end: Vec<usize> = vec![n; starts.len()];
    let mut skip: Vec<Range<u64>> = vec![0..0; starts.len()];
    let mut open_boundaries = 0;
    for (c, &start) in starts.iter().enumerate() {
        let end = starts.get(c + 1).copied().unwrap_or(n);
        owner[start..end].fill(c);
    }
    for c in 1..starts.len() {
        let k = starts[c];
        let gop_end = keyframes.iter().copied().find(|&j| j > k).unwrap_or(n);
        let mut last_leading = None;
        for i in k + 1..gop_end {
            if samples[i].pts < samples[k].pts {
                owner[i] = c - 1;
                last_leading = Some(i);
            }
        }
        feed_end[c - 1] = match last_leading {
            Some(i) => {
                open_boundaries += 1;
                i + 1
            }
            None => k,
        };
        if skip_leading {
            let run = samples[k + 1..gop_end].iter().take_while(|s| s.pts < samples[k].pts).count();
            skip[c] = (k + 1) as u64..(k + 1 + run) as u64;
        }
    }

    let first = match first_pts {
        Some(p) => rank_pts.partition_point(|&q| q < p) as u64,
        None => 0,
    };
    let end = match max_frames {
        Some(f) => first.saturating_add(f).min(n as u64),
        None => n as u64,
    };
    let mut ranks: Vec<Vec<u64>> = vec![Vec::new(); starts.len()];
    for rank in first..end {
        let sample = order[rank as usize];
        ranks[owner[sample]].push(rank);
    }
    let mut chunks = Vec::new();
    let mut rank_chunk = vec![u32::MAX; n];
    for (c, r) in ranks.into_iter().enumerate() {
        if r.is_empty() {
            continue;
        }
        for &rank in &r {
            rank_chunk[rank as usize] = chunks.len() as u32;
        }
        chunks.push(ChunkSpec { feed: starts[c] as u64..feed_end[c] as u64, skip: skip[c].clone(), ranks: r });
    }
    let mut min_window = 1usize;
    let mut latest_before: Option<u64> = None;
    for chunk in &chunks {
        let lowest = chunk.ranks[0];
        if let Some(latest) = latest_before.filter(|&l| l >= lowest) {
            min_window = min_window.max((latest - lowest) as usize + 1);
        }
        let highest = chunk.ranks[chunk.ranks.len() - 1];
        latest_before = Some(latest_before.map_or(highest, |l| l.max(highest)));
    }
    let max_chunk_frames = chunks.iter().map(|c| c.ranks.len()).max().unwrap_or(0);
    Ok(ChunkPlan { chunks, rank_pts, rank_chunk, first, end, open_boundaries, max_chunk_frames, min_window })
}

/// Whether a chunk's session may leave out its own leading pictures. HEVC
/// forbids trailing pictures to reference leading ones (H.265 8.3.2: no
/// picture preceding the IRAP in output order is in a trailing picture's
/// reference picture set), so nothing the chunk delivers needs them; and
/// NVDEC's parser, started at a CRA followed by RASL pictures, did not
/// display the CRA itself (seen on the H100, driver 580), which feeding the
/// CRA without its RASL pictures avoids. H.264 has no such rule (a trailing
/// P may reference a decodable leading B), so there they are fed and
/// discarded.
pub fn skips_leading_pictures(codec: VideoCodec) -> bool {
    codec == VideoCodec::Hevc
}

/// The default window for `sessions` sessions: (K − 1)·G + 4·K places for
/// chunks of at most G frames, so that no session waits for room while the
/// consumer waits for the chunk in front of it (see the module
/// documentation); at least the plan's deadlock-free minimum, at most
/// `budget_frames`.
pub fn default_window(plan: &ChunkPlan, sessions: usize, budget_frames: usize) -> usize {
    let sessions = sessions.max(1);
    let span = (sessions - 1) * plan.max_chunk_frames + sessions * WINDOW_SLACK_PER_SESSION;
    span.min(budget_frames).max(plan.min_window)
}

// ---------------------------------------------------------------------------
// The reorder window

/// What [`ReorderWindow::pop`] found.
#[derive(Debug)]
pub enum Popped<T, E> {
    Frame(u64, T),
    /// Every requested rank was delivered or reported missing.
    End,
    /// A session failed at or before the next rank.
    Failed(E),
    /// [`ReorderWindow::stop`] was called.
    Stopped,
    /// Nothing arrived within the timeout.
    TimedOut,
}

struct WindowState<T, E> {
    /// The next rank the consumer gets.
    next: u64,
    /// Frames waiting, at `(rank - first) % capacity`.
    held: Vec<Option<T>>,
    held_count: usize,
    peak_held: usize,
    /// Ranks no session will deliver (dropped by the decoder, or lost with a failed chunk).
    missing: Vec<bool>,
    /// The lowest rank at which a session failed, with its error.
    failure: Option<(u64, E)>,
    stopped: bool,
}

/// Frames from several producers, handed out strictly by rank, with at most
/// `capacity` of them waiting: a producer must [`admit`](Self::admit) a rank
/// (which waits until it lies within `capacity` of the next rank out) before
/// it [`put`](Self::put)s the frame.
pub struct ReorderWindow<T, E> {
    state: Mutex<WindowState<T, E>>,
    changed: Condvar,
    first: u64,
    end: u64,
    capacity: usize,
}

impl<T, E> ReorderWindow<T, E> {
    /// A window over ranks `first..end` with `capacity` places (at least 1).
    pub fn new(first: u64, end: u64, capacity: usize) -> Self {
        let capacity = capacity.max(1);
        ReorderWindow {
            state: Mutex::new(WindowState {
                next: first,
                held: (0..capacity).map(|_| None).collect(),
                held_count: 0,
                peak_held: 0,
                missing: vec![false; end.saturating_sub(first) as usize],
                failure: None,
                stopped: false,
            }),
            changed: Condvar::new(),
            first,
            end,
            capacity,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WindowState<T, E>> {
        // A producer that panicked while holding the lock leaves consistent
        // state (every update is a single assignment); go on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until `rank` fits in the window. False when the frame is not
    /// wanted any more: the window stopped, a failure came before it, or the
    /// consumer is past it.
    pub fn admit(&self, rank: u64) -> bool {
        let mut s = self.lock();
        loop {
            if s.stopped || s.failure.as_ref().is_some_and(|(r, _)| *r <= rank) || rank < s.next || rank >= self.end {
                return false;
            }
            if rank < s.next + self.capacity as u64 {
                return true;
            }
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Whether a chunk whose lowest rank is `rank` is still worth decoding.
    pub fn wants(&self, rank: u64) -> bool {
        let s = self.lock();
        !s.stopped && s.failure.as_ref().is_none_or(|(r, _)| *r > rank)
    }

    /// A frame for an admitted rank. Returns it if the window no longer wants
    /// it (stopped meanwhile, or a duplicate).
    pub fn put(&self, rank: u64, frame: T) -> Result<(), T> {
        let mut s = self.lock();
        if s.stopped || rank < s.next || rank >= s.next + self.capacity as u64 {
            return Err(frame);
        }
        let place = ((rank - self.first) % self.capacity as u64) as usize;
        if s.held[place].is_some() {
            return Err(frame);
        }
        s.held[place] = Some(frame);
        s.held_count += 1;
        s.peak_held = s.peak_held.max(s.held_count);
        drop(s);
        self.changed.notify_all();
        Ok(())
    }

    /// `rank` will not come: the consumer skips it.
    pub fn mark_missing(&self, rank: u64) {
        let mut s = self.lock();
        if rank >= s.next && rank < self.end {
            s.missing[(rank - self.first) as usize] = true;
            drop(s);
            self.changed.notify_all();
        }
    }

    /// A producer failed; the consumer gets every frame before `rank`, then `error`.
    /// The lowest failing rank wins.
    pub fn fail(&self, rank: u64, error: E) {
        let mut s = self.lock();
        if s.failure.as_ref().is_none_or(|(r, _)| rank < *r) {
            s.failure = Some((rank, error));
        }
        drop(s);
        self.changed.notify_all();
    }

    /// Wakes everyone; producers' admissions fail and the consumer gets `Stopped`.
    pub fn stop(&self) {
        self.lock().stopped = true;
        self.changed.notify_all();
    }

    pub fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    /// The most frames that waited at once.
    pub fn peak_held(&self) -> usize {
        self.lock().peak_held
    }

    /// The next frame in rank order, waiting at most `timeout` for it.
    pub fn pop(&self, timeout: Duration) -> Popped<T, E> {
        let mut s = self.lock();
        let mut waited = false;
        loop {
            if s.stopped {
                return Popped::Stopped;
            }
            if s.failure.as_ref().is_some_and(|(r, _)| *r <= s.next) {
                let (_, error) = s.failure.take().expect("checked above");
                // Nothing after a failure is delivered.
                s.stopped = true;
                drop(s);
                self.changed.notify_all();
                return Popped::Failed(error);
            }
            if s.next >= self.end {
                return Popped::End;
            }
            let rank = s.next;
            let place = ((rank - self.first) % self.capacity as u64) as usize;
            if let Some(frame) = s.held[place].take() {
                s.held_count -= 1;
                s.next += 1;
                drop(s);
                self.changed.notify_all();
                return Popped::Frame(rank, frame);
            }
            if s.missing[(rank - self.first) as usize] {
                s.next += 1;
                self.changed.notify_all();
                continue;
            }
            if waited {
                return Popped::TimedOut;
            }
            let (guard, result) = self.changed.wait_timeout(s, timeout).unwrap_or_else(|e| e.into_inner());
            s = guard;
            waited = result.timed_out();
        }
    }
}

// ---------------------------------------------------------------------------
// Sessions

/// One decoder session as the parallel decoder drives it: NVDEC
/// ([`NvdecSession`]) in the product, a model codec in the tests.
pub trait ChunkDecoder {
    /// A decoded picture kept for the consumer (for NVDEC: a frame slot).
    type Frame: Send;

    /// Decodes the samples `spec.feed` but `spec.skip` (decode order) from a
    /// clean decoder state, as if they began the stream, offering every
    /// displayed picture to `out` in display order. Returns early, without
    /// error, once `out.stopped()`.
    fn decode_chunk(&mut self, spec: &ChunkSpec, out: &mut dyn ChunkOutput<Self::Frame>) -> Result<(), ParallelError>;
}

/// Where a session's displayed pictures go.
pub trait ChunkOutput<F> {
    /// Decoding should end (Ctrl-C, the consumer stopped, or a failure elsewhere).
    fn stopped(&self) -> bool;
    /// A picture was displayed with `pts`: `Some(rank)` when it is to be kept
    /// (after waiting for room in the window), `None` to drop it.
    fn admit(&mut self, pts: i64) -> Result<Option<u64>, ParallelError>;
    /// The kept picture for an admitted rank.
    fn keep(&mut self, rank: u64, frame: F, status: PictureStatus);
}

/// What the sessions did, for `--stats` and summaries.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ParallelReport {
    pub decoders: usize,
    pub chunks: usize,
    /// Chunk boundaries with leading pictures (open GOPs), decoded in the previous chunk's tail.
    pub open_boundaries: usize,
    /// Places in the reorder window (frame slots that may wait for their turn).
    pub window_slots: usize,
    /// The most frames that waited in the window at once.
    pub window_peak: usize,
    /// Frames delivered to the consumer.
    pub frames: u64,
    /// Pictures decoded and dropped: tails' keyframes, leading pictures a
    /// chunk does not own, frames outside `--start`/`--frames`.
    pub discarded: u64,
    /// Ranks NVDEC reported concealed / failed (the frames were delivered).
    pub concealed: Vec<u64>,
    pub failed: Vec<u64>,
    /// Ranks no session displayed (a damaged stream): skipped, not delivered.
    pub missing: Vec<u64>,
    /// Seconds from the start of the decode until the consumer got its first
    /// frame, and its last.
    pub first_frame_at_s: f64,
    pub last_frame_at_s: f64,
    /// Seconds the consumer waited for the next frame in order (the decode
    /// was behind), and spent handing frames on (its `consume`: a full
    /// channel there means the GPU work was behind).
    pub consumer_wait_s: f64,
    pub consume_s: f64,
    /// Per session, in the order they were started.
    pub session_timing: Vec<SessionTiming>,
}

/// What one session did when, in seconds from the start of the decode.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SessionTiming {
    /// The session existed (created on its own thread, beside the others).
    pub ready_at_s: f64,
    /// How long its creation took.
    pub create_s: f64,
    /// It put its first frame into the window (None: it delivered none).
    pub first_frame_at_s: Option<f64>,
    /// It finished its last chunk.
    pub done_at_s: f64,
    /// It was retired (torn down, on its own thread) after its last chunk.
    pub retired_at_s: f64,
    pub chunks: usize,
    /// Frames it put into the window.
    pub frames: u64,
    /// Time it waited for a place in the window (the consumer was more than
    /// the window behind this session's frame).
    pub window_wait_s: f64,
}

/// Per-session, per-chunk bookkeeping behind [`ChunkOutput`].
struct SessionOutput<'a, F> {
    plan: &'a ChunkPlan,
    chunk: usize,
    /// Index into the chunk's ranks of the next one not yet delivered or skipped.
    cursor: usize,
    window: &'a ReorderWindow<F, ParallelError>,
    should_stop: &'a (dyn Fn() -> bool + Sync),
    label: &'a str,
    discarded: u64,
    concealed: Vec<u64>,
    failed: Vec<u64>,
    missing: Vec<u64>,
    delivered: u64,
    /// This chunk's share of the session's timing.
    first_frame_at: Option<Instant>,
    window_wait: Duration,
}

impl<F> SessionOutput<'_, F> {
    fn ranks(&self) -> &[u64] {
        &self.plan.chunks[self.chunk].ranks
    }

    /// The lowest rank of this chunk not yet delivered or skipped (or the end).
    fn next_rank(&self) -> u64 {
        self.ranks().get(self.cursor).copied().unwrap_or(self.plan.end)
    }

    /// The chunk is done: ranks its session never displayed are missing.
    fn finish(&mut self) {
        let rest: Vec<u64> = self.ranks()[self.cursor..].to_vec();
        self.cursor = self.ranks().len();
        for rank in rest {
            self.window.mark_missing(rank);
            self.missing.push(rank);
        }
    }
}

impl<F> ChunkOutput<F> for SessionOutput<'_, F> {
    fn stopped(&self) -> bool {
        (self.should_stop)() || self.window.is_stopped()
    }

    fn admit(&mut self, pts: i64) -> Result<Option<u64>, ParallelError> {
        let Some(rank) = self.plan.rank_of_pts(pts) else {
            self.discarded += 1;
            return Ok(None);
        };
        if self.plan.chunk_of_rank(rank) != Some(self.chunk) {
            self.discarded += 1;
            return Ok(None);
        }
        let ranks = &self.plan.chunks[self.chunk].ranks;
        let position = match ranks[self.cursor..].binary_search(&rank) {
            Ok(p) => p,
            // Owned but behind the cursor: displayed after a later picture of this chunk.
            Err(_) => return Err(ParallelError::DisplayOrder { label: self.label.to_string(), pts }),
        };
        // Ranks of this chunk before this one were never displayed.
        let skipped: Vec<u64> = ranks[self.cursor..self.cursor + position].to_vec();
        self.cursor += position + 1;
        for r in skipped {
            self.window.mark_missing(r);
            self.missing.push(r);
        }
        if (self.should_stop)() {
            self.discarded += 1;
            return Ok(None);
        }
        let asked = Instant::now();
        let admitted = self.window.admit(rank);
        self.window_wait += asked.elapsed();
        if !admitted {
            self.discarded += 1;
            return Ok(None);
        }
        Ok(Some(rank))
    }

    fn keep(&mut self, rank: u64, frame: F, status: PictureStatus) {
        match status {
            PictureStatus::Concealed => self.concealed.push(rank),
            PictureStatus::Failed => self.failed.push(rank),
            PictureStatus::Ok | PictureStatus::Unknown => {}
        }
        if self.window.put(rank, frame).is_ok() {
            self.delivered += 1;
            self.first_frame_at.get_or_insert_with(Instant::now);
        } else {
            self.discarded += 1;
        }
    }
}

/// Stops the window if a session thread unwinds, so that the consumer does
/// not wait for frames that will never come.
struct StopOnPanic<'a, T, E>(&'a ReorderWindow<T, E>);

impl<T, E> Drop for StopOnPanic<'_, T, E> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop();
        }
    }
}

/// Per-session totals, merged into the report.
#[derive(Default)]
struct SessionTotals {
    discarded: u64,
    concealed: Vec<u64>,
    failed: Vec<u64>,
    missing: Vec<u64>,
    timing: SessionTiming,
}

/// Seconds from `origin` to `at`.
fn seconds_since(origin: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(origin).as_secs_f64()
}

/// Decodes the plan's chunks on `sessions` (one thread each; chunks taken in
/// order as sessions come free) and calls `consume` with every requested
/// frame in rank order on the calling thread. Returns the report and the
/// sessions (for their own statistics). `should_stop` ends the run early
/// without error (frames so far were consumed). A session's error reaches
/// the caller after every frame ranked before it; a `consume` error stops
/// the sessions and is returned.
pub fn run_chunks<D>(
    plan: &ChunkPlan,
    sessions: Vec<D>,
    window: usize,
    label: &str,
    should_stop: &(dyn Fn() -> bool + Sync),
    consume: &mut dyn FnMut(u64, D::Frame) -> Result<(), ParallelError>,
) -> Result<(ParallelReport, Vec<D>), ParallelError>
where
    D: ChunkDecoder + Send,
{
    let count = sessions.len();
    let made: Mutex<Vec<Option<D>>> = Mutex::new(sessions.into_iter().map(Some).collect());
    let take = |i: usize| -> Result<D, ParallelError> {
        let mut made = made.lock().unwrap_or_else(|e| e.into_inner());
        Ok(made[i].take().expect("each session is taken once"))
    };
    run_chunks_with(plan, count, &take, &|session| session, window, label, should_stop, consume, &mut || {})
}

/// [`run_chunks`] on `count` sessions made by `make(i)`, each on its own
/// thread, all at once: the first session ready takes the first chunk. A
/// session that cannot be made fails the decode before its first frame.
/// Once no chunk is left for a session, `retire` turns it into what is
/// returned for it, on its thread, while the others may still decode.
/// `drained` is called once, on the calling thread, after the last frame
/// was consumed and before the sessions still retiring are waited for: the
/// caller can finish its output while NVDEC tears down (not called when
/// the run fails or stops early).
#[allow(clippy::too_many_arguments)]
pub fn run_chunks_with<D, R>(
    plan: &ChunkPlan,
    count: usize,
    make: &(dyn Fn(usize) -> Result<D, ParallelError> + Sync),
    retire: &(dyn Fn(D) -> R + Sync),
    window: usize,
    label: &str,
    should_stop: &(dyn Fn() -> bool + Sync),
    consume: &mut dyn FnMut(u64, D::Frame) -> Result<(), ParallelError>,
    drained: &mut dyn FnMut(),
) -> Result<(ParallelReport, Vec<R>), ParallelError>
where
    D: ChunkDecoder + Send,
    R: Send,
{
    let origin = Instant::now();
    let reorder: ReorderWindow<D::Frame, ParallelError> = ReorderWindow::new(plan.first, plan.end, window);
    let next_chunk = AtomicUsize::new(0);
    let mut report = ParallelReport {
        decoders: count,
        chunks: plan.chunks.len(),
        open_boundaries: plan.open_boundaries,
        window_slots: reorder.capacity(),
        ..Default::default()
    };
    let (consumed, sessions) = std::thread::scope(|scope| {
        let reorder = &reorder;
        let next_chunk = &next_chunk;
        let handles: Vec<_> = (0..count)
            .map(|i| {
                scope.spawn(move || {
                    let _guard = StopOnPanic(reorder);
                    let mut totals = SessionTotals::default();
                    let created = Instant::now();
                    let mut session = match make(i) {
                        Ok(session) => session,
                        Err(e) => {
                            // Nothing can be delivered in order without every session's chunks.
                            reorder.fail(plan.first, e);
                            return (None, totals);
                        }
                    };
                    let ready = Instant::now();
                    totals.timing.create_s = (ready - created).as_secs_f64();
                    totals.timing.ready_at_s = seconds_since(origin, ready);
                    let mut first_frame_at: Option<Instant> = None;
                    loop {
                        let chunk = next_chunk.fetch_add(1, Ordering::Relaxed);
                        let Some(spec) = plan.chunks.get(chunk) else { break };
                        if should_stop() || !reorder.wants(spec.ranks[0]) {
                            break;
                        }
                        let mut out = SessionOutput {
                            plan,
                            chunk,
                            cursor: 0,
                            window: reorder,
                            should_stop,
                            label,
                            discarded: 0,
                            concealed: Vec::new(),
                            failed: Vec::new(),
                            missing: Vec::new(),
                            delivered: 0,
                            first_frame_at: None,
                            window_wait: Duration::ZERO,
                        };
                        let result = session.decode_chunk(spec, &mut out);
                        match result {
                            Ok(()) if !out.stopped() => out.finish(),
                            Ok(()) => {}
                            Err(e) => reorder.fail(out.next_rank(), e),
                        }
                        totals.discarded += out.discarded;
                        totals.concealed.append(&mut out.concealed);
                        totals.failed.append(&mut out.failed);
                        totals.missing.append(&mut out.missing);
                        totals.timing.chunks += 1;
                        totals.timing.frames += out.delivered;
                        totals.timing.window_wait_s += out.window_wait.as_secs_f64();
                        first_frame_at = first_frame_at.or(out.first_frame_at);
                    }
                    totals.timing.first_frame_at_s = first_frame_at.map(|at| seconds_since(origin, at));
                    totals.timing.done_at_s = seconds_since(origin, Instant::now());
                    let retired = retire(session);
                    totals.timing.retired_at_s = seconds_since(origin, Instant::now());
                    (Some(retired), totals)
                })
            })
            .collect();

        let mut consumed: Result<u64, ParallelError> = Ok(0);
        let (mut waited, mut consuming) = (Duration::ZERO, Duration::ZERO);
        let (mut first_frame_at, mut last_frame_at) = (None, None);
        loop {
            let asked = Instant::now();
            let popped = reorder.pop(Duration::from_millis(50));
            let got = Instant::now();
            waited += got - asked;
            match popped {
                Popped::Frame(rank, frame) => {
                    first_frame_at.get_or_insert(got);
                    last_frame_at = Some(got);
                    let result = consume(rank, frame);
                    consuming += got.elapsed();
                    if let Err(e) = result {
                        consumed = Err(e);
                        reorder.stop();
                        break;
                    }
                    if let Ok(n) = consumed.as_mut() {
                        *n += 1;
                    }
                }
                Popped::End => {
                    if consumed.is_ok() {
                        drained();
                    }
                    break;
                }
                Popped::Stopped => break,
                Popped::Failed(e) => {
                    consumed = Err(e);
                    break;
                }
                Popped::TimedOut => {
                    if should_stop() {
                        reorder.stop();
                        break;
                    }
                }
            }
        }
        report.consumer_wait_s = waited.as_secs_f64();
        report.consume_s = consuming.as_secs_f64();
        report.first_frame_at_s = first_frame_at.map_or(0.0, |at| seconds_since(origin, at));
        report.last_frame_at_s = last_frame_at.map_or(0.0, |at| seconds_since(origin, at));
        // Sessions may be waiting for room that will not come now.
        reorder.stop();
        let mut sessions = Vec::with_capacity(count);
        for handle in handles {
            let (session, totals) = handle.join().expect("a decode session panicked");
            report.discarded += totals.discarded;
            report.concealed.extend(totals.concealed);
            report.failed.extend(totals.failed);
            report.missing.extend(totals.missing);
            report.session_timing.push(totals.timing);
            sessions.extend(session);
        }
        (consumed, sessions)
    });
    report.frames = consumed?;
    report.window_peak = reorder.peak_held();
    for list in [&mut report.concealed, &mut report.failed, &mut report.missing] {
        list.sort_unstable();
    }
    Ok((report, sessions))
}

// ---------------------------------------------------------------------------
// NVDEC

/// A frame decoded by a session, in its ring slot.
pub struct SlotFrame<'ring, 'pool> {
    pub slot: Slot<'ring, 'pool>,
    pub pts: i64,
    pub status: PictureStatus,
}

/// One NVDEC session: its own decoder, stream and demuxer, copying kept
/// pictures into slots of a shared ring.
pub struct NvdecSession<'ring, 'pool> {
    decoder: NvDecoder,
    demuxer: Demuxer,
    stream: Arc<CudaStream>,
    ring: &'ring SlotRing<'pool>,
    layout: FrameLayout,
    label: String,
    started: bool,
    /// Bitstream bytes fed to NVDEC.
    pub bytes: u64,
    /// NVDEC's surfaces for this session, estimated (see [`NvDecoder::surface_bytes_estimate`]).
    pub surface_bytes: u64,
    /// Where its time went (seconds).
    pub timing: NvdecSessionTiming,
}

/// Where one NVDEC session's time went, in seconds (beside [`SessionTiming`]).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct NvdecSessionTiming {
    /// `cuvidCreateDecoder` (the decoder and its surfaces, made at the first sequence header).
    pub decoder_create_s: f64,
    /// Waiting for a free frame slot (every slot held by the window or the consumer).
    pub slot_wait_s: f64,
    /// Copying pictures out of NVDEC's surfaces into slots, and waiting for the copy.
    pub copy_s: f64,
    /// Reading samples from the file.
    pub demux_s: f64,
    /// Tearing the session down (decoder, parser, stream) once it had no chunk left.
    pub teardown_s: f64,
}

impl<'ring, 'pool> NvdecSession<'ring, 'pool> {
    /// A session reading `demuxer` (a clone of its own), decoding on a new stream of `gpu`.
    pub fn new(
        gpu: &Gpu,
        demuxer: Demuxer,
        ring: &'ring SlotRing<'pool>,
        label: &str,
    ) -> Result<NvdecSession<'ring, 'pool>, ParallelError> {
        let info = demuxer.info().clone();
        let stream = gpu.new_priority_stream()?;
        let decoder = NvDecoder::new(gpu, stream.clone(), &info, label)?;
        Ok(NvdecSession {
            layout: decoder.layout(),
            decoder,
            demuxer,
            stream,
            ring,
            label: label.to_string(),
            started: false,
            bytes: 0,
            surface_bytes: 0,
            timing: NvdecSessionTiming::default(),
        })
    }
}

impl<'ring, 'pool> ChunkDecoder for NvdecSession<'ring, 'pool> {
    type Frame = SlotFrame<'ring, 'pool>;

    fn decode_chunk(&mut self, spec: &ChunkSpec, out: &mut dyn ChunkOutput<Self::Frame>) -> Result<(), ParallelError> {
        if self.started {
            self.decoder.restart()?;
        }
        self.started = true;
        let (ring, stream, layout, label) = (self.ring, self.stream.clone(), self.layout, self.label.as_str());
        // The feed loop polls `stopped` while the display callback admits and
        // keeps pictures; both reach the output through this cell, one at a time.
        let out = RefCell::new(out);
        // The output's own errors (display order) cannot travel through
        // NVDEC's callback type; they wait here and win over the NvdecError
        // that carried them out.
        let failure: RefCell<Option<ParallelError>> = RefCell::new(None);
        let (slot_wait, copying) = (std::cell::Cell::new(Duration::ZERO), std::cell::Cell::new(Duration::ZERO));
        let mut deliver = |picture: &MappedPicture| -> Result<(), NvdecError> {
            let _range = nvtx::range(Stage::Decode);
            let admitted = out.borrow_mut().admit(picture.pts);
            let rank = match admitted {
                Ok(Some(rank)) => rank,
                Ok(None) => return Ok(()),
                Err(e) => {
                    *failure.borrow_mut() = Some(e);
                    return Err(NvdecError::Output {
                        label: label.to_string(),
                        frame: picture.index,
                        reason: "the display order check failed".into(),
                    });
                }
            };
            picture.expect_layout(&layout, label)?;
            let asked = Instant::now();
            let slot = ring.acquire(&stream)?;
            let got = Instant::now();
            picture.copy_to(&slot.view())?;
            slot_wait.set(slot_wait.get() + (got - asked));
            copying.set(copying.get() + got.elapsed());
            out.borrow_mut().keep(rank, SlotFrame { slot, pts: picture.pts, status: picture.status }, picture.status);
            Ok(())
        };
        self.demuxer.seek_to_index(spec.feed.start);
        let mut result: Result<(), ParallelError> = Ok(());
        for index in spec.feed.clone() {
            if out.borrow().stopped() {
                break;
            }
            if spec.skip.contains(&index) {
                continue;
            }
            if index == spec.skip.end && !spec.skip.is_empty() {
                self.demuxer.seek_to_index(index);
            }
            let read = Instant::now();
            let chunk = {
                let _range = nvtx::range(Stage::Demux);
                self.demuxer.next_chunk()
            };
            self.timing.demux_s += read.elapsed().as_secs_f64();
            let chunk = match chunk {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            };
            self.bytes += chunk.data.len() as u64;
            if let Err(e) = self.decoder.decode(&chunk, &mut deliver) {
                result = Err(e.into());
                break;
            }
        }
        if result.is_ok() {
            result = self.decoder.flush(&mut deliver).map_err(ParallelError::from);
        }
        self.surface_bytes = self.surface_bytes.max(self.decoder.surface_bytes_estimate());
        self.timing.decoder_create_s = self.decoder.decoder_create_s();
        self.timing.slot_wait_s += slot_wait.get().as_secs_f64();
        self.timing.copy_s += copying.get().as_secs_f64();
        match failure.into_inner() {
            Some(e) => Err(e),
            None => result,
        }
    }
}

/// How many NVDEC engines this GPU has for the stream's codec (at least 1).
pub fn nvdec_engines(gpu: &Gpu, info: &StreamInfo) -> Result<usize, NvdecError> {
    let caps = query_caps(gpu, info.codec.name(), nvdec_codec(info.codec), info.bit_depth)?;
    Ok(usize::from(caps.engines).max(1))
}

/// What the caller asks of a parallel decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParallelOptions {
    /// Sessions (None: one per NVDEC engine; 1: the plain single-session path).
    pub decoders: Option<usize>,
    /// Reorder window places (None: [`default_window`] within the budget).
    pub window: Option<usize>,
    /// Chunks shorter than this are merged with the next GOP.
    pub min_chunk_frames: usize,
}

impl Default for ParallelOptions {
    fn default() -> Self {
        ParallelOptions { decoders: None, window: None, min_chunk_frames: MIN_CHUNK_FRAMES }
    }
}

impl ParallelOptions {
    /// `decoders` sessions, everything else by default.
    pub fn sessions(decoders: Option<usize>) -> Self {
        ParallelOptions { decoders, ..Default::default() }
    }
}

/// What a decode will run on, decided before the frame pool is planned.
#[derive(Debug, Clone)]
pub struct ParallelSetup {
    /// Sessions to run; 1 is the plain single-session path (no plan).
    pub decoders: usize,
    /// NVDEC engines on the GPU for this stream.
    pub engines: usize,
    /// The split, when `decoders > 1`.
    pub plan: Option<ChunkPlan>,
    /// Reorder window places (frame slots beyond the consumer's own); 0 when single-session.
    pub window: usize,
    /// Why fewer sessions than asked for run, when so.
    pub note: Option<String>,
}

/// Decides how many sessions decode `demuxer`'s file and the reorder
/// window: `options.decoders` sessions (None: one per NVDEC engine), at most
/// the engine count and the number of chunks; a window of `options.window`
/// frames (None: [`default_window`] within `budget_bytes` of frames of
/// `frame_bytes`). `first_pts`/`max_frames` select the frames wanted (see
/// [`plan_chunks`]). Files that cannot be split decode on one session, with
/// a note saying why.
pub fn setup(
    demuxer: &Demuxer,
    options: &ParallelOptions,
    engines: usize,
    (first_pts, max_frames): (Option<i64>, Option<u64>),
    frame_bytes: usize,
    budget_bytes: usize,
) -> Result<ParallelSetup, ParallelError> {
    let (requested, window) = (options.decoders, options.window);
    if requested == Some(0) {
        return Err(ParallelError::NoDecoders(0));
    }
    let engines = engines.max(1);
    let wanted = requested.unwrap_or(engines);
    let single = |note: Option<String>| ParallelSetup { decoders: 1, engines, plan: None, window: 0, note };
    if wanted == 1 {
        return Ok(single(None));
    }
    let mut note = (wanted > engines)
        .then(|| format!("{wanted} decoders asked for, this GPU has {engines} NVDEC engines: using {engines}"));
    let label = demuxer.path().display().to_string();
    if demuxer.container() == Container::AnnexB {
        return Ok(single(Some(format!(
            "{label}: a raw Annex-B stream carries no presentation times, so it decodes on one session"
        ))));
    }
    let skip = skips_leading_pictures(demuxer.info().codec);
    let plan = match plan_chunks(&sample_timings(demuxer), options.min_chunk_frames, first_pts, max_frames, skip) {
        Ok(plan) => plan,
        Err(why) => return Ok(single(Some(format!("{label}: {why}; decoding on one session")))),
    };
    let decoders = wanted.min(engines).min(plan.chunks.len());
    if decoders <= 1 {
        return Ok(single(Some(format!(
            "{label}: the requested frames lie in {} chunk(s) between keyframes, so they decode on one session",
            plan.chunks.len()
        ))));
    }
    if decoders < wanted.min(engines) {
        note = Some(format!("{label}: {} chunks between keyframes, so {decoders} decoders", plan.chunks.len()));
    }
    let budget_frames = budget_bytes / frame_bytes.max(1);
    if plan.min_window > budget_frames.max(window.unwrap_or(0)) {
        let gib = |frames: usize| (frames * frame_bytes) as f64 / (1u64 << 30) as f64;
        return Err(ParallelError::WindowTooSmall {
            label,
            need: plan.min_window,
            need_gib: gib(plan.min_window),
            budget_gib: gib(budget_frames),
        });
    }
    let window = window.unwrap_or_else(|| default_window(&plan, decoders, budget_frames)).max(plan.min_window);
    Ok(ParallelSetup { decoders, engines, plan: Some(plan), window, note })
}

/// Totals of an NVDEC parallel decode.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NvdecParallelReport {
    #[serde(flatten)]
    pub sessions: ParallelReport,
    /// Bitstream bytes fed to NVDEC over all sessions (tails included).
    pub bitstream_bytes: u64,
    /// NVDEC surfaces of all sessions, estimated.
    pub surface_bytes: u64,
    /// Per session (the order of `sessions.session_timing`).
    pub nvdec_timing: Vec<NvdecSessionTiming>,
}

/// Decodes a planned file on `setup.decoders` NVDEC sessions into slots of
/// `ring` (which must have at least `setup.window` slots beyond what the
/// consumer holds), calling `consume(rank, frame)` in presentation order,
/// then `drained()` once the last frame is consumed, while the last
/// sessions may still be tearing down (see [`run_chunks_with`]).
pub fn decode_into_ring<'ring, 'pool>(
    gpu: &Gpu,
    demuxer: &Demuxer,
    setup: &ParallelSetup,
    ring: &'ring SlotRing<'pool>,
    should_stop: &(dyn Fn() -> bool + Sync),
    consume: &mut dyn FnMut(u64, SlotFrame<'ring, 'pool>) -> Result<(), ParallelError>,
    drained: &mut dyn FnMut(),
) -> Result<NvdecParallelReport, ParallelError> {
    let plan = setup.plan.as_ref().ok_or(ParallelError::NoDecoders(setup.decoders))?;
    let label = demuxer.path().display().to_string();
    // Each session is made on its own thread, all at once.
    let make = |_: usize| NvdecSession::new(gpu, demuxer.try_clone()?, ring, &label);
    // A session out of chunks is torn down on its own thread at once (NVDEC's
    // teardown takes tens of milliseconds a session), while the others still
    // decode, rather than all of them after the last frame.
    let retire = |session: NvdecSession| {
        let (bytes, surface_bytes, mut timing) = (session.bytes, session.surface_bytes, session.timing);
        let dropping = Instant::now();
        drop(session);
        timing.teardown_s = dropping.elapsed().as_secs_f64();
        (bytes, surface_bytes, timing)
    };
    let (sessions, used) =
        run_chunks_with(plan, setup.decoders, &make, &retire, setup.window, &label, should_stop, consume, drained)?;
    Ok(NvdecParallelReport {
        bitstream_bytes: used.iter().map(|s| s.0).sum(),
        surface_bytes: used.iter().map(|s| s.1).sum(),
        nvdec_timing: used.iter().map(|s| s.2).collect(),
        sessions,
    })
}

/// The share of the GPU's memory the reorder window may take by default.
pub fn default_window_budget(gpu: &Gpu) -> Result<usize, GpuError> {
    let (_free, total) = gpu.memory_info()?;
    Ok(total / 4)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::mpsc;

    use super::*;

    /// A sample of the model codec: a picture predicted from `refs`
    /// (decode-order indices).
    #[derive(Debug, Clone)]
    struct ModelSample {
        pts: i64,
        keyframe: bool,
        refs: Vec<usize>,
    }

    /// An x265-like stream: GOPs of `gop_len` pictures, an anchor (I or P)
    /// every `bframes + 1` pictures with the B-frames between two anchors
    /// decoded after the later one (with `pyramid`, the middle B is decoded
    /// first and referenced by the others). Open GOPs leave the B-frames
    /// before each keyframe to be decoded after it, predicted from the
    /// previous GOP's last anchor and the keyframe (RASL pictures); closed
    /// GOPs end each GOP with a P anchor instead.
    fn model_stream(gops: usize, gop_len: usize, bframes: usize, open: bool, pyramid: bool) -> Vec<ModelSample> {
        let n = gops * gop_len;
        let mut anchors = Vec::new();
        for g in 0..gops {
            let start = g * gop_len;
            let end = start + gop_len;
            let mut pos = start;
            while pos < end {
                anchors.push(pos);
                pos += bframes + 1;
            }
            if (!open || g + 1 == gops) && *anchors.last().unwrap() != end - 1 {
                anchors.push(end - 1);
            }
        }
        let keyframe = |display: usize| display % gop_len == 0;
        // Decode order as display positions, with each one's references (display positions).
        let mut order: Vec<(usize, Vec<usize>)> = Vec::new();
        let mut previous: Option<usize> = None;
        for &a in &anchors {
            let refs = if keyframe(a) { vec![] } else { vec![previous.expect("a P anchor follows an anchor")] };
            order.push((a, refs));
            if let Some(p) = previous {
                let bs: Vec<usize> = (p + 1..a).collect();
                if pyramid && bs.len() >= 3 {
                    let mid = bs[bs.len() / 2];
                    order.push((mid, vec![p, a]));
                    for &b in bs.iter().filter(|&&b| b != mid) {
                        order.push((b, if b < mid { vec![p, mid] } else { vec![mid, a] }));
                    }
                } else {
                    for &b in &bs {
                        order.push((b, vec![p, a]));
                    }
                }
            }
            previous = Some(a);
        }
        assert_eq!(order.len(), n);
        let decode_index: HashMap<usize, usize> = order.iter().enumerate().map(|(i, (d, _))| (*d, i)).collect();
        order
            .iter()
            .map(|(d, refs)| ModelSample {
                pts: *d as i64 * 512 + 1000,
                keyframe: keyframe(*d),
                refs: refs.iter().map(|r| decode_index[r]).collect(),
            })
            .collect()
    }

    fn timings(stream: &[ModelSample]) -> Vec<SampleTiming> {
        stream.iter().map(|s| SampleTiming { pts: s.pts, keyframe: s.keyframe }).collect()
    }

    /// A decoded model picture: which sample, and whether every picture it
    /// depends on was decoded correctly in the same session.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct ModelFrame {
        sample: usize,
        correct: bool,
    }

    /// The model decoder: decodes a feed from a clean state, holds up to
    /// `delay` pictures for reordering (like NVDEC's DPB and display delay)
    /// and displays by pts. `drop` samples are decoded but never displayed;
    /// feeding `corrupt` fails.
    struct ModelDecoder {
        stream: Arc<Vec<ModelSample>>,
        delay: usize,
        drop: Vec<usize>,
        corrupt: Option<usize>,
        fed: Arc<Mutex<Vec<Range<u64>>>>,
    }

    impl ModelDecoder {
        fn new(stream: &Arc<Vec<ModelSample>>) -> ModelDecoder {
            ModelDecoder {
                stream: stream.clone(),
                delay: 4,
                drop: Vec::new(),
                corrupt: None,
                fed: Arc::new(Mutex::new(Vec::new())),
            }
        }

        fn display(
            &self,
            dpb: &mut Vec<ModelFrame>,
            keep: usize,
            out: &mut dyn ChunkOutput<ModelFrame>,
        ) -> Result<(), ParallelError> {
            while dpb.len() > keep {
                let (i, _) = dpb.iter().enumerate().min_by_key(|(_, f)| self.stream[f.sample].pts).unwrap();
                let frame = dpb.remove(i);
                if self.drop.contains(&frame.sample) {
                    continue;
                }
                if let Some(rank) = out.admit(self.stream[frame.sample].pts)? {
                    out.keep(rank, frame, PictureStatus::Ok);
                }
            }
            Ok(())
        }
    }

    impl ChunkDecoder for ModelDecoder {
        type Frame = ModelFrame;

        fn decode_chunk(
            &mut self,
            spec: &ChunkSpec,
            out: &mut dyn ChunkOutput<ModelFrame>,
        ) -> Result<(), ParallelError> {
            self.fed.lock().unwrap().push(spec.feed.clone());
            let mut correct: HashMap<usize, bool> = HashMap::new();
            let mut dpb = Vec::new();
            for i in spec.feed.start as usize..spec.feed.end as usize {
                if out.stopped() {
                    return Ok(());
                }
                if spec.skip.contains(&(i as u64)) {
                    continue;
                }
                if self.corrupt == Some(i) {
                    return Err(ParallelError::Decoder(format!("model: sample {i} is corrupt")));
                }
                let ok = self.stream[i].refs.iter().all(|r| correct.get(r) == Some(&true));
                correct.insert(i, ok);
                dpb.push(ModelFrame { sample: i, correct: ok });
                self.display(&mut dpb, self.delay, out)?;
            }
            self.display(&mut dpb, 0, out)
        }
    }

    /// Collects every displayed picture: the single-session reference.
    struct Everything(Vec<ModelFrame>);

    impl ChunkOutput<ModelFrame> for Everything {
        fn stopped(&self) -> bool {
            false
        }
        fn admit(&mut self, _pts: i64) -> Result<Option<u64>, ParallelError> {
            Ok(Some(self.0.len() as u64))
        }
        fn keep(&mut self, _rank: u64, frame: ModelFrame, _status: PictureStatus) {
            self.0.push(frame);
        }
    }

    /// A chunk that feeds `feed` whole.
    fn whole(feed: Range<u64>) -> ChunkSpec {
        ChunkSpec { feed, skip: 0..0, ranks: Vec::new() }
    }

    fn single_session(stream: &Arc<Vec<ModelSample>>) -> Vec<ModelFrame> {
        let mut all = Everything(Vec::new());
        ModelDecoder::new(stream).decode_chunk(&whole(0..stream.len() as u64), &mut all).unwrap();
        all.0
    }

    /// Runs `run_chunks` on its own thread so that a deadlock fails the test
    /// instead of hanging it.
    fn run_model(
        plan: &ChunkPlan,
        sessions: Vec<ModelDecoder>,
        window: usize,
    ) -> (Result<ParallelReport, String>, Vec<(u64, ModelFrame)>) {
        let (done_tx, done_rx) = mpsc::channel();
        let plan = plan.clone();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            let result = run_chunks(&plan, sessions, window, "model.mp4", &|| false, &mut |rank, frame| {
                got.push((rank, frame));
                Ok(())
            });
            let _ = done_tx.send((result.map(|(r, _)| r).map_err(|e| e.to_string()), got));
        });
        done_rx.recv_timeout(Duration::from_secs(20)).expect("the parallel decode did not finish in 20 s (deadlock?)")
    }

    #[test]
    fn the_model_codec_cannot_decode_rasl_pictures_from_their_keyframe() {
        // The model must make open GOPs matter, or the tests below prove nothing.
        let stream = Arc::new(model_stream(3, 16, 3, true, true));
        let second = stream.iter().enumerate().filter(|(_, s)| s.keyframe).nth(1).unwrap().0;
        let mut from_keyframe = Everything(Vec::new());
        ModelDecoder::new(&stream)
            .decode_chunk(&whole(second as u64..stream.len() as u64), &mut from_keyframe)
            .unwrap();
        let wrong: Vec<ModelFrame> = from_keyframe.0.iter().copied().filter(|f| !f.correct).collect();
        assert_eq!(wrong.len(), 3, "the 3 B-frames before the keyframe: {wrong:?}");
        assert!(wrong.iter().all(|f| stream[f.sample].pts < stream[second].pts));
        // Without its leading pictures, a chunk still decodes every trailing picture.
        let run = stream[second + 1..].iter().take_while(|s| s.pts < stream[second].pts).count() as u64;
        let spec = ChunkSpec {
            feed: second as u64..stream.len() as u64,
            skip: second as u64 + 1..second as u64 + 1 + run,
            ranks: Vec::new(),
        };
        let mut skipped = Everything(Vec::new());
        ModelDecoder::new(&stream).decode_chunk(&spec, &mut skipped).unwrap();
        assert_eq!(skipped.0.len(), from_keyframe.0.len() - 3);
        assert!(skipped.0.iter().all(|f| f.correct));
        // Closed GOPs decode entirely from their keyframe.
        let closed = Arc::new(model_stream(3, 16, 3, false, true));
        let second = closed.iter().enumerate().filter(|(_, s)| s.keyframe).nth(1).unwrap().0;
        let mut from_keyframe = Everything(Vec::new());
        ModelDecoder::new(&closed)
            .decode_chunk(&whole(second as u64..closed.len() as u64), &mut from_keyframe)
            .unwrap();
        assert!(from_keyframe.0.iter().all(|f| f.correct));
        // The whole stream from its start decodes correctly, in pts order.
        let all = single_session(&stream);
        assert!(all.iter().all(|f| f.correct));
        assert!(all.windows(2).all(|w| stream[w[0].sample].pts < stream[w[1].sample].pts));
    }

    #[test]
    fn parallel_output_equals_single_session_output() {
        for (gops, gop_len, bframes, open, pyramid) in [
            (7, 16, 3, true, true),
            (7, 16, 3, false, true),
            (5, 14, 2, true, false),
            (9, 9, 4, true, true),
            (1, 30, 3, true, true),
        ] {
            // B-frames between the last anchor of a GOP and the next keyframe.
            let leading = if open { (gop_len - 1) % (bframes + 1) } else { 0 } as u64;
            let stream = Arc::new(model_stream(gops, gop_len, bframes, open, pyramid));
            let reference = single_session(&stream);
            for (min_chunk, skip) in
                [(1, false), (1, true), (MIN_CHUNK_FRAMES, false), (MIN_CHUNK_FRAMES, true), (40, true)]
            {
                let plan = plan_chunks(&timings(&stream), min_chunk, None, None, skip).unwrap();
                if open && gops > 1 && min_chunk == 1 {
                    assert_eq!(plan.open_boundaries, gops - 1, "every boundary is open");
                }
                for sessions in [1, 2, 3, 7] {
                    let case = format!(
                        "{gops} GOPs of {gop_len}, {bframes} B, open {open}, pyramid {pyramid}, chunks of ≥ {min_chunk}, skip leading {skip}, {sessions} sessions"
                    );
                    let decoders = (0..sessions).map(|_| ModelDecoder::new(&stream)).collect();
                    let window = default_window(&plan, sessions, usize::MAX);
                    let (report, got) = run_model(&plan, decoders, window);
                    let report = report.unwrap_or_else(|e| panic!("{case}: {e}"));
                    let ranks: Vec<u64> = got.iter().map(|(r, _)| *r).collect();
                    assert_eq!(ranks, (0..stream.len() as u64).collect::<Vec<_>>(), "{case}");
                    let frames: Vec<ModelFrame> = got.iter().map(|(_, f)| *f).collect();
                    assert_eq!(frames, reference, "{case}");
                    assert!(report.missing.is_empty() && report.window_peak <= window, "{case}: {report:?}");
                    // Tails cost the keyframe and its leading pictures, once per open
                    // boundary; skipping saves the leading pictures again.
                    let fed: u64 =
                        plan.chunks.iter().map(|c| (c.feed.end - c.feed.start) - (c.skip.end - c.skip.start)).sum();
                    let extra = plan.open_boundaries as u64 * if skip { 1 } else { leading + 1 };
                    assert_eq!(fed, stream.len() as u64 + extra, "{case}");
                }
            }
        }
    }

    #[test]
    fn the_consumer_hears_the_end_before_the_sessions_finish_retiring() {
        // NVDEC's teardown is slow: the caller finishes its output meanwhile.
        // Each retiring session waits (up to 10 s) for `drained`; called
        // only after the join, it would come too late for all of them.
        use std::sync::atomic::AtomicBool;
        let stream = Arc::new(model_stream(6, 12, 2, true, true));
        let plan = plan_chunks(&timings(&stream), 1, None, None, false).unwrap();
        let sessions = 3;
        let window = default_window(&plan, sessions, usize::MAX);
        let heard = AtomicBool::new(false);
        let make = |_: usize| -> Result<ModelDecoder, ParallelError> { Ok(ModelDecoder::new(&stream)) };
        let retire = |_: ModelDecoder| -> bool {
            let until = Instant::now() + Duration::from_secs(10);
            while !heard.load(Ordering::SeqCst) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            heard.load(Ordering::SeqCst)
        };
        let mut consume = |_: u64, _: ModelFrame| -> Result<(), ParallelError> { Ok(()) };
        let mut calls = 0;
        let (report, retired) =
            run_chunks_with(&plan, sessions, &make, &retire, window, "model.mp4", &|| false, &mut consume, &mut || {
                calls += 1;
                heard.store(true, Ordering::SeqCst);
            })
            .unwrap();
        assert_eq!(report.frames, stream.len() as u64);
        assert_eq!(calls, 1, "drained is called once");
        assert_eq!(retired, vec![true; sessions], "every session saw the end before it finished retiring");
    }

    #[test]
    fn start_and_frame_count_select_ranks_and_skip_chunks() {
        let stream = Arc::new(model_stream(7, 16, 3, true, true));
        let reference = single_session(&stream);
        // pts = display * 512 + 1000: start at display 37 (mid GOP 2), 30 frames.
        let plan = plan_chunks(&timings(&stream), MIN_CHUNK_FRAMES, Some(37 * 512 + 1000), Some(30), false).unwrap();
        assert_eq!((plan.first, plan.end), (37, 67));
        let decoders: Vec<ModelDecoder> = (0..3).map(|_| ModelDecoder::new(&stream)).collect();
        let fed = decoders[0].fed.clone();
        let mut all_fed = vec![fed];
        all_fed.extend(decoders[1..].iter().map(|d| d.fed.clone()));
        let window = default_window(&plan, 3, usize::MAX);
        let (report, got) = run_model(&plan, decoders, window);
        report.unwrap();
        let ranks: Vec<u64> = got.iter().map(|(r, _)| *r).collect();
        assert_eq!(ranks, (37..67).collect::<Vec<_>>());
        let frames: Vec<ModelFrame> = got.iter().map(|(_, f)| *f).collect();
        assert_eq!(frames, reference[37..67]);
        // Ranks are displays here. Each chunk delivers its GOP's displays (its own
        // leading pictures come from the previous chunk's tail), so displays
        // 37..66 are chunks 2..4, and chunks 0, 1, 5 and 6 are never decoded.
        let mut ranges: Vec<Range<u64>> = all_fed.iter().flat_map(|f| f.lock().unwrap().clone()).collect();
        ranges.sort_by_key(|r| r.start);
        assert_eq!(ranges.len(), 3, "{ranges:?}");
        assert_eq!(plan.chunks.len(), 3);
        // Past the end of the file: nothing to decode.
        let empty = plan_chunks(&timings(&stream), MIN_CHUNK_FRAMES, Some(1 << 40), None, false).unwrap();
        assert!(empty.chunks.is_empty() && empty.frames() == 0);
    }

    #[test]
    fn pictures_a_decoder_never_displays_are_reported_and_skipped() {
        let stream = Arc::new(model_stream(6, 16, 3, true, true));
        let reference = single_session(&stream);
        let plan = plan_chunks(&timings(&stream), MIN_CHUNK_FRAMES, None, None, false).unwrap();
        // Decode-order samples 5 and 40, wherever they are displayed.
        let dropped = [5usize, 40];
        let decoders = (0..3)
            .map(|_| {
                let mut d = ModelDecoder::new(&stream);
                d.drop = dropped.to_vec();
                d
            })
            .collect();
        let (report, got) = run_model(&plan, decoders, default_window(&plan, 3, usize::MAX));
        let report = report.unwrap();
        let mut missing: Vec<u64> = dropped.iter().map(|&s| plan.rank_of_pts(stream[s].pts).unwrap()).collect();
        missing.sort_unstable();
        assert_eq!(report.missing, missing);
        let expected: Vec<ModelFrame> = reference.iter().copied().filter(|f| !dropped.contains(&f.sample)).collect();
        let frames: Vec<ModelFrame> = got.iter().map(|(_, f)| *f).collect();
        assert_eq!(frames, expected);
    }

    #[test]
    fn a_corrupt_chunk_fails_after_every_frame_ranked_before_it() {
        let stream = Arc::new(model_stream(7, 16, 3, true, true));
        let plan = plan_chunks(&timings(&stream), MIN_CHUNK_FRAMES, None, None, false).unwrap();
        let bad_chunk = &plan.chunks[3];
        let corrupt = bad_chunk.feed.start as usize + 6;
        let decoders = (0..4)
            .map(|_| {
                let mut d = ModelDecoder::new(&stream);
                d.corrupt = Some(corrupt);
                d
            })
            .collect();
        let (report, got) = run_model(&plan, decoders, default_window(&plan, 4, usize::MAX));
        let err = report.unwrap_err();
        assert!(err.contains(&format!("sample {corrupt} is corrupt")), "{err}");
        let ranks: Vec<u64> = got.iter().map(|(r, _)| *r).collect();
        let delivered = ranks.len() as u64;
        assert_eq!(ranks, (0..delivered).collect::<Vec<_>>(), "a prefix, in order");
        assert!(delivered >= bad_chunk.ranks[0] && delivered <= *bad_chunk.ranks.last().unwrap(), "{delivered}");
        // Chunk 2 (the previous one, delivering chunk 3's leading pictures) also decodes
        // the corrupt sample if its tail reaches it; here the tail ends before it.
        assert!(plan.chunks[2].feed.end as usize <= corrupt);
    }

    #[test]
    fn the_smallest_window_still_finishes_in_order() {
        let stream = Arc::new(model_stream(9, 12, 3, true, true));
        let reference = single_session(&stream);
        let plan = plan_chunks(&timings(&stream), 1, None, None, false).unwrap();
        assert_eq!(plan.min_window, 1, "x265-like GOPs do not cross in presentation order");
        for window in [1, 2, 5] {
            let decoders = (0..7).map(|_| ModelDecoder::new(&stream)).collect();
            let (report, got) = run_model(&plan, decoders, window);
            let report = report.unwrap();
            assert!(report.window_peak <= window, "{report:?}");
            let frames: Vec<ModelFrame> = got.iter().map(|(_, f)| *f).collect();
            assert_eq!(frames, reference, "window {window}");
        }
    }

    #[test]
    fn a_picture_displayed_after_the_next_keyframe_stays_with_its_chunk() {
        // Decode order I0 P2 B1 X5 | I4 P7 B6 | I8 P9: X (pts 5) is decoded before
        // the keyframe I4 but displayed after it.
        let s = |pts: i64, keyframe: bool, refs: &[usize]| ModelSample { pts, keyframe, refs: refs.to_vec() };
        let stream = Arc::new(vec![
            s(0, true, &[]),
            s(2, false, &[0]),
            s(1, false, &[0, 1]),
            s(5, false, &[1]),
            s(4, true, &[]),
            s(7, false, &[4]),
            s(6, false, &[4, 5]),
            s(8, true, &[]),
            s(9, false, &[7]),
        ]);
        let reference = single_session(&stream);
        assert!(reference.iter().all(|f| f.correct));
        let plan = plan_chunks(&timings(&stream), 1, None, None, false).unwrap();
        assert_eq!(plan.chunks.len(), 3);
        // Ranks: pts 0 1 2 4 5 6 7 8 9 are ranks 0..8, so X is rank 4 and I4 rank 3.
        assert_eq!(plan.chunks[0].ranks, vec![0, 1, 2, 4], "X keeps its rank 4 in chunk 0");
        assert_eq!(plan.chunks[1].ranks, vec![3, 5, 6]);
        assert_eq!(plan.min_window, 2, "chunk 0's rank 4 lies 1 past chunk 1's first rank 3");
        for sessions in [2, 3] {
            let decoders = (0..sessions).map(|_| ModelDecoder::new(&stream)).collect();
            let (report, got) = run_model(&plan, decoders, plan.min_window);
            report.unwrap();
            let frames: Vec<ModelFrame> = got.iter().map(|(_, f)| *f).collect();
            assert_eq!(frames, reference);
        }
    }

    #[test]
    fn gop_splitting_on_the_committed_open_and_closed_gop_clips() {
        let clips = crate::testing::clips_dir();
        for (clip, open) in [("hevc_opengop.mp4", true), ("h264_opengop.mp4", true), ("h264_unknown_size.mkv", false)] {
            let demuxer = Demuxer::open(clips.join(clip)).unwrap();
            let samples = sample_timings(&demuxer);
            let keyframes = demuxer.keyframe_indices();
            let skip = skips_leading_pictures(demuxer.info().codec);
            assert_eq!(skip, clip.starts_with("hevc"));
            let plan = plan_chunks(&samples, MIN_CHUNK_FRAMES, None, None, skip).unwrap();
            let n = samples.len() as u64;
            // Every rank delivered by exactly one chunk.
            let mut all: Vec<u64> = plan.chunks.iter().flat_map(|c| c.ranks.clone()).collect();
            all.sort_unstable();
            assert_eq!(all, (0..n).collect::<Vec<_>>(), "{clip}");
            // Chunks start at keyframes, in order, covering the file.
            let starts: Vec<u64> = plan.chunks.iter().map(|c| c.feed.start).collect();
            assert_eq!(starts[0], 0);
            assert!(starts.iter().all(|s| keyframes.contains(s)), "{clip}: {starts:?}");
            let mut open_seen = 0;
            for pair in plan.chunks.windows(2) {
                let (a, b) = (&pair[0], &pair[1]);
                assert!(a.feed.end >= b.feed.start, "{clip}: a gap between {:?} and {:?}", a.feed, b.feed);
                let tail = a.feed.end - b.feed.start;
                // The keyframe's leading B-frames, which follow it in decode order.
                let k = b.feed.start as usize;
                let leading = samples[k + 1..].iter().take_while(|s| s.pts < samples[k].pts).count() as u64;
                if leading > 0 {
                    // The previous chunk decodes the keyframe and its leading pictures;
                    // for HEVC, the chunk itself leaves them out.
                    open_seen += 1;
                    assert_eq!(tail, leading + 1, "{clip}: {:?} then {:?}", a.feed, b.feed);
                    let left_out = if skip { k as u64 + 1..k as u64 + 1 + leading } else { 0..0 };
                    assert_eq!(b.skip, left_out, "{clip}");
                } else {
                    assert_eq!(tail, 0, "{clip}: closed GOPs need no tail");
                }
                if clip.starts_with("hevc") {
                    assert_eq!(leading, 3, "{clip}: x265 puts 3 B-frames (RASL) before each CRA");
                }
            }
            assert_eq!(plan.chunks.last().unwrap().feed.end, n);
            assert_eq!(plan.open_boundaries, open_seen, "{clip}");
            if open {
                // x264 sometimes ends a GOP on a P frame (no leading pictures); x265 never here.
                assert!(open_seen >= plan.chunks.len() / 2, "{clip}: {open_seen} open boundaries");
            } else {
                assert_eq!(open_seen, 0, "{clip}");
            }
            assert_eq!(plan.min_window, 1, "{clip}");
            if open {
                assert_eq!(plan.chunks.len(), keyframes.len(), "{clip}: GOPs of 16 are not merged");
                assert!(plan.chunks.len() >= 6, "{clip}");
            } else {
                // GOPs of 6 are merged into chunks of at least 8 samples.
                assert!(plan.chunks.iter().all(|c| c.feed.end - c.feed.start >= MIN_CHUNK_FRAMES as u64));
            }
        }
    }

    #[test]
    fn files_that_cannot_be_ranked_are_not_split() {
        let t = |pts, keyframe| SampleTiming { pts, keyframe };
        let err =
            plan_chunks(&[t(0, true), t(10, false), t(10, true), t(20, false)], 1, None, None, false).unwrap_err();
        assert!(err.contains("share the pts 10"), "{err}");
        assert!(plan_chunks(&[], 1, None, None, false).is_err());
        // All-intra: every sample a keyframe, merged into chunks of MIN_CHUNK_FRAMES.
        let intra: Vec<SampleTiming> = (0..30).map(|i| t(i * 100, true)).collect();
        let plan = plan_chunks(&intra, MIN_CHUNK_FRAMES, None, None, false).unwrap();
        let lengths: Vec<usize> = plan.chunks.iter().map(|c| c.ranks.len()).collect();
        assert_eq!(lengths, vec![8, 8, 8, 6]);
        assert_eq!(plan.open_boundaries, 0);
    }

    #[test]
    fn the_default_window_spans_the_chunks_of_all_sessions_but_one_within_its_budget() {
        let stream = model_stream(7, 16, 3, true, true);
        let plan = plan_chunks(&timings(&stream), MIN_CHUNK_FRAMES, None, None, false).unwrap();
        // Chunks deliver up to 16 frames: 16 places for each session but one, and 4 for each.
        assert_eq!(plan.max_chunk_frames, 16);
        assert_eq!(default_window(&plan, 2, usize::MAX), 16 + 2 * 4);
        assert_eq!(default_window(&plan, 7, usize::MAX), 6 * 16 + 7 * 4);
        assert_eq!(default_window(&plan, 7, 30), 30);
        assert_eq!(default_window(&plan, 7, 0), plan.min_window);
    }

    #[test]
    fn the_reorder_window_hands_out_by_rank_whatever_the_arrival_order_within_it() {
        let n = 500u64;
        let capacity = 6;
        let window: ReorderWindow<u64, String> = ReorderWindow::new(0, n, capacity);
        let missing: Vec<u64> = (0..n).filter(|r| r % 37 == 11).collect();
        std::thread::scope(|scope| {
            // Four producers, each owning every fourth rank, each swapping some
            // neighbours: a rank may arrive one of the producer's ranks late,
            // which stays within the window (a producer must never hold back a
            // rank while it waits for room for a later one).
            for p in 0..4u64 {
                let window = &window;
                let missing = &missing;
                scope.spawn(move || {
                    let mut mine: Vec<u64> = (0..n).filter(|r| r % 4 == p).collect();
                    let mut state = p * 7 + 1;
                    for i in (0..mine.len().saturating_sub(1)).step_by(2) {
                        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                        if (state >> 33) % 2 == 0 {
                            mine.swap(i, i + 1);
                        }
                    }
                    for rank in mine {
                        if missing.contains(&rank) {
                            window.mark_missing(rank);
                        } else if window.admit(rank) {
                            window.put(rank, rank * 10).unwrap();
                        }
                    }
                });
            }
            let mut got = Vec::new();
            loop {
                match window.pop(Duration::from_secs(10)) {
                    Popped::Frame(rank, value) => {
                        assert_eq!(value, rank * 10);
                        got.push(rank);
                    }
                    Popped::End => break,
                    other => panic!("{other:?} after {} frames", got.len()),
                }
            }
            let expected: Vec<u64> = (0..n).filter(|r| !missing.contains(r)).collect();
            assert_eq!(got, expected);
        });
        assert!(window.peak_held() <= capacity, "{}", window.peak_held());
    }

    #[test]
    fn a_failure_ends_the_window_after_the_ranks_before_it() {
        let window: ReorderWindow<u64, String> = ReorderWindow::new(10, 20, 4);
        for rank in [10, 11, 13] {
            assert!(window.admit(rank));
            window.put(rank, rank).unwrap();
        }
        window.fail(12, "chunk 2 broke".into());
        assert!(!window.admit(14), "nothing after the failure is wanted");
        assert!(matches!(window.pop(Duration::ZERO), Popped::Frame(10, 10)));
        assert!(matches!(window.pop(Duration::ZERO), Popped::Frame(11, 11)));
        match window.pop(Duration::ZERO) {
            Popped::Failed(e) => assert_eq!(e, "chunk 2 broke"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(window.pop(Duration::ZERO), Popped::Stopped));
        // An empty window times out rather than blocking forever.
        let idle: ReorderWindow<u64, String> = ReorderWindow::new(0, 5, 2);
        assert!(matches!(idle.pop(Duration::from_millis(1)), Popped::TimedOut));
        // A producer waiting for room (rank 2 of a 2-place window at rank 0) is released by stop.
        std::thread::scope(|scope| {
            let waiting = scope.spawn(|| idle.admit(2));
            std::thread::sleep(Duration::from_millis(20));
            idle.stop();
            assert!(!waiting.join().unwrap());
        });
    }
}
