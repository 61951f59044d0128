//! vrseg's TensorRT engine file: a small header that says which TensorRT
//! release and which GPU built it, then TensorRT's serialised plan.
//!
//! The header lets vrseg refuse an engine from another TensorRT release or
//! another GPU architecture with a sentence, before TensorRT is loaded (and
//! checks the plan's length and checksum, so a damaged file never reaches
//! TensorRT's deserialiser). Layout, little-endian:
//!
//! | offset | bytes | field |
//! | --- | --- | --- |
//! | 0 | 8 | magic `VRSEGTRT` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | metadata length `N` |
//! | 16 | 8 | plan offset (a multiple of 4096, so the plan is page-aligned in the mapping) |
//! | 24 | 8 | plan length |
//! | 32 | 8 | FNV-1a 64 of the plan |
//! | 40 | N | metadata, JSON ([`EngineMetadata`]) |
//!
//! then zeros up to the plan offset, the plan, and nothing after it.
//!
//! A file without the magic is taken as a bare TensorRT plan (`trtexec
//! --saveEngine`, say): it loads without these checks, and TensorRT's own
//! refusal, quoted from its log, is the error.

use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::error::TensorRtError;
use super::version::TrtVersion;

pub const MAGIC: &[u8; 8] = b"VRSEGTRT";
pub const FORMAT_VERSION: u32 = 1;
const FIXED_BYTES: usize = 40;
const PLAN_ALIGNMENT: usize = 4096;
/// Metadata is a few kilobytes; more means a damaged length field.
const MAX_METADATA_BYTES: usize = 1 << 20;

/// The first optimisation profile's batch range, `--batch MIN:OPT:MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BatchRange {
    pub min: u32,
    pub opt: u32,
    pub max: u32,
}

/// One I/O tensor as the builder saw it (-1 for a dimension set at run time).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MetadataTensor {
    pub name: String,
    /// "input" or "output".
    pub role: String,
    /// "f32", "f16", ...
    pub dtype: String,
    pub shape: Vec<i64>,
}

/// What vrseg records about an engine it builds.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EngineMetadata {
    /// The TensorRT release that built the plan (the one that must load it).
    pub tensorrt: TrtVersion,
    /// `getInferLibBuildVersion()`, where the library has it.
    pub tensorrt_build: Option<i32>,
    /// The GPU the plan was built on, and its compute capability (major, minor).
    pub gpu_name: String,
    pub compute_capability: (i32, i32),
    /// The vrseg release that wrote the file.
    pub vrseg_version: String,
    /// The ONNX model's file name.
    pub source: String,
    /// "model" (the model's own types), "fp16" or "int8".
    pub precision: String,
    pub batch: Option<BatchRange>,
    pub tensors: Vec<MetadataTensor>,
}

/// A parsed header: the metadata and where the plan lies in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedHeader {
    pub metadata: EngineMetadata,
    pub plan: Range<usize>,
}

fn bad(path: &Path, reason: impl Into<String>) -> TensorRtError {
    TensorRtError::BadEngineFile { path: path.to_path_buf(), reason: reason.into() }
}

/// FNV-1a, 64 bits: enough to tell a damaged or truncated plan from a whole one.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the header of `bytes` (the whole file). `Ok(None)`: no vrseg
/// header, a bare TensorRT plan.
pub fn parse_header(path: &Path, bytes: &[u8]) -> Result<Option<ParsedHeader>, TensorRtError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        if bytes.is_empty() {
            return Err(bad(path, "the file is empty"));
        }
        return Ok(None);
    }
    if bytes.len() < FIXED_BYTES {
        return Err(bad(path, format!("the header is cut off after {} bytes", bytes.len())));
    }
    let format = u32_at(bytes, 8);
    if format != FORMAT_VERSION {
        return Err(bad(
            path,
            format!(
                "header format {format} is not the one this vrseg reads ({FORMAT_VERSION}); rebuild the engine with \
                 this vrseg"
            ),
        ));
    }
    let metadata_len = u32_at(bytes, 12) as usize;
    let plan_offset = u64_at(bytes, 16);
    let plan_len = u64_at(bytes, 24);
    let checksum = u64_at(bytes, 32);
    if metadata_len > MAX_METADATA_BYTES || FIXED_BYTES + metadata_len > bytes.len() {
        return Err(bad(path, format!("the metadata length ({metadata_len} bytes) runs past the end of the file")));
    }
    let metadata_end = FIXED_BYTES + metadata_len;
    let plan_start = usize::try_from(plan_offset).map_err(|_| bad(path, "the plan offset is out of range"))?;
    if plan_start < metadata_end || plan_start % PLAN_ALIGNMENT != 0 {
        return Err(bad(path, format!("the plan offset {plan_offset} is not valid")));
    }
    let plan_end = usize::try_from(plan_len)
        .ok()
        .and_then(|len| plan_start.checked_add(len))
        .ok_or_else(|| bad(path, "the plan length is out of range"))?;
    if plan_end > bytes.len() {
        return Err(bad(
            path,
            format!(
                "it is truncated: the plan should end at byte {plan_end}, the file has {} (an interrupted copy?)",
                bytes.len()
            ),
        ));
    }
    if plan_end < bytes.len() {
        return Err(bad(path, format!("{} unexpected bytes follow the plan", bytes.len() - plan_end)));
    }
    if plan_end == plan_start {
        return Err(bad(path, "the plan is empty"));
    }
    let metadata: EngineMetadata = serde_json::from_slice(&bytes[FIXED_BYTES..metadata_end])
        .map_err(|e| bad(path, format!("its metadata is not readable: {e}")))?;
    if fnv1a64(&bytes[plan_start..plan_end]) != checksum {
        return Err(bad(path, "the plan's checksum does not match (the file is damaged); rebuild the engine"));
    }
    Ok(Some(ParsedHeader { metadata, plan: plan_start..plan_end }))
}

/// The header bytes for `metadata` and a plan of `plan` (everything before the plan).
pub fn encode_header(metadata: &EngineMetadata, plan: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(metadata).expect("engine metadata serialises");
    let metadata_end = FIXED_BYTES + json.len();
    let plan_offset = metadata_end.div_ceil(PLAN_ALIGNMENT) * PLAN_ALIGNMENT;
    let mut out = Vec::with_capacity(plan_offset);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&(plan_offset as u64).to_le_bytes());
    out.extend_from_slice(&(plan.len() as u64).to_le_bytes());
    out.extend_from_slice(&fnv1a64(plan).to_le_bytes());
    out.extend_from_slice(&json);
    out.resize(plan_offset, 0);
    out
}

/// What the machine offers, for [`check_compatible`].
#[derive(Debug, Clone)]
pub struct RunningOn<'a> {
    pub tensorrt: TrtVersion,
    pub ordinal: usize,
    pub gpu_name: &'a str,
    pub compute_capability: (i32, i32),
}

fn sm((major, minor): (i32, i32)) -> String {
    format!("{major}{minor}")
}

/// Refuses an engine from another TensorRT release or GPU architecture.
/// Returns warnings (same architecture, another GPU model) for the caller to print.
pub fn check_compatible(
    path: &Path,
    metadata: &EngineMetadata,
    running: &RunningOn<'_>,
) -> Result<Vec<String>, TensorRtError> {
    if metadata.tensorrt != running.tensorrt {
        return Err(TensorRtError::EngineVersionMismatch {
            path: path.to_path_buf(),
            built: metadata.tensorrt,
            found: running.tensorrt,
        });
    }
    if metadata.compute_capability != running.compute_capability {
        return Err(TensorRtError::EngineForOtherGpu {
            path: path.to_path_buf(),
            built: format!("{} (sm_{})", metadata.gpu_name, sm(metadata.compute_capability)),
            running: format!("GPU {} is {} (sm_{})", running.ordinal, running.gpu_name, sm(running.compute_capability)),
        });
    }
    let mut warnings = Vec::new();
    if metadata.gpu_name != running.gpu_name {
        warnings.push(format!(
            "{} was built on {}, this is {} (same architecture, sm_{}): it runs, but TensorRT chose its kernels for \
             the other GPU; rebuild it here for the best speed",
            path.display(),
            metadata.gpu_name,
            running.gpu_name,
            sm(running.compute_capability)
        ));
    }
    Ok(warnings)
}

/// Whether the file at `path` starts with vrseg's TensorRT engine header
/// (false for anything unreadable or shorter: callers report those).
pub fn has_engine_magic(path: &Path) -> bool {
    use std::io::Read as _;
    let mut magic = [0u8; MAGIC.len()];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok() && &magic == MAGIC
}

/// `path` with `.partial` appended: where a file is written before the rename.
pub fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".partial");
    PathBuf::from(name)
}

/// A file written whole under `path.partial` and not yet renamed: [`commit`]
/// renames it over `path`; dropped uncommitted (an error or a panic on the
/// way), it removes the partial file. So a reader of `path` sees the old file
/// or the whole new one, never half of one, and a failure leaves nothing.
///
/// [`commit`]: PartialFile::commit
#[derive(Debug)]
pub struct PartialFile {
    partial: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl PartialFile {
    /// Writes `parts` to `path.partial` and syncs it.
    pub fn write(path: &Path, parts: &[&[u8]]) -> Result<PartialFile, TensorRtError> {
        let write_err = |source| TensorRtError::Write { path: path.to_path_buf(), source };
        let mut file = std::fs::File::create(partial_path(path)).map_err(write_err)?;
        // From here on, dropping `guard` removes what was created.
        let guard = PartialFile { partial: partial_path(path), target: path.to_path_buf(), committed: false };
        for part in parts {
            file.write_all(part).map_err(write_err)?;
        }
        file.sync_all().map_err(write_err)?;
        Ok(guard)
    }

    /// Where the file lies until it is committed.
    pub fn path(&self) -> &Path {
        &self.partial
    }

    /// Renames the file over its target.
    pub fn commit(mut self) -> Result<(), TensorRtError> {
        std::fs::rename(&self.partial, &self.target)
            .map_err(|source| TensorRtError::Write { path: self.target.clone(), source })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// Writes `parts` to `path.partial`, syncs, then renames it over `path`
/// (see [`PartialFile`]).
pub fn write_atomically(path: &Path, parts: &[&[u8]]) -> Result<(), TensorRtError> {
    PartialFile::write(path, parts)?.commit()
}

/// An engine file mapped into memory, its header checked.
pub struct EngineFile {
    path: PathBuf,
    map: memmap2::Mmap,
    header: Option<ParsedHeader>,
}

impl std::fmt::Debug for EngineFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineFile").field("path", &self.path).field("bytes", &self.map.len()).finish()
    }
}

impl EngineFile {
    /// Maps `path` and checks its header (no TensorRT needed).
    pub fn open(path: &Path) -> Result<EngineFile, TensorRtError> {
        let read_err = |source| TensorRtError::Read { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(read_err)?;
        // SAFETY: the mapping is only read, and nothing in vrseg writes an
        // engine file in place (build-engine writes `.partial` and renames, so
        // the mapped inode never changes). Another program truncating the file
        // while it is mapped is outside what we can guard against, as for any
        // mmap reader (ripgrep makes the same promise).
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(read_err)?;
        let header = parse_header(path, &map)?;
        Ok(EngineFile { path: path.to_path_buf(), map, header })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// None for a bare TensorRT plan.
    pub fn metadata(&self) -> Option<&EngineMetadata> {
        self.header.as_ref().map(|h| &h.metadata)
    }

    /// The serialised plan TensorRT deserialises.
    pub fn plan(&self) -> &[u8] {
        match &self.header {
            Some(h) => &self.map[h.plan.clone()],
            None => &self.map,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn metadata() -> EngineMetadata {
        EngineMetadata {
            tensorrt: TrtVersion::new(10, 8, 0),
            tensorrt_build: Some(43),
            gpu_name: "NVIDIA H100 80GB HBM3".into(),
            compute_capability: (9, 0),
            vrseg_version: "0.1.0".into(),
            source: "yolo11n-seg.onnx".into(),
            precision: "fp16".into(),
            batch: Some(BatchRange { min: 1, opt: 2, max: 8 }),
            tensors: vec![MetadataTensor {
                name: "images".into(),
                role: "input".into(),
                dtype: "f32".into(),
                shape: vec![-1, 3, 640, 640],
            }],
        }
    }

    fn file_bytes(plan: &[u8]) -> Vec<u8> {
        let mut bytes = encode_header(&metadata(), plan);
        bytes.extend_from_slice(plan);
        bytes
    }

    #[test]
    fn header_round_trips_and_page_aligns_the_plan() {
        let plan: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let bytes = file_bytes(&plan);
        let parsed = parse_header(Path::new("x.engine"), &bytes).unwrap().expect("has a header");
        assert_eq!(parsed.metadata, metadata());
        assert_eq!(parsed.plan.start % PLAN_ALIGNMENT, 0);
        assert_eq!(&bytes[parsed.plan], &plan[..]);
    }

    #[test]
    fn a_file_without_the_magic_is_a_bare_plan() {
        assert_eq!(parse_header(Path::new("x.engine"), b"ftrt\x00\x01plan bytes").unwrap(), None);
        let err = parse_header(Path::new("x.engine"), b"").unwrap_err().to_string();
        assert_eq!(err, "x.engine is not a usable vrseg TensorRT engine: the file is empty");
    }

    #[test]
    fn truncation_damage_and_trailing_bytes_are_refused() {
        let plan = vec![42u8; 5000];
        let bytes = file_bytes(&plan);
        let path = Path::new("engines/x.engine");

        let err = parse_header(path, &bytes[..bytes.len() - 1]).unwrap_err().to_string();
        assert!(err.starts_with("engines/x.engine is not a usable vrseg TensorRT engine: it is truncated"), "{err}");

        let mut damaged = bytes.clone();
        *damaged.last_mut().unwrap() ^= 1;
        let err = parse_header(path, &damaged).unwrap_err().to_string();
        assert!(err.contains("checksum does not match"), "{err}");

        let mut longer = bytes.clone();
        longer.push(0);
        assert!(parse_header(path, &longer).unwrap_err().to_string().contains("1 unexpected bytes follow the plan"));

        let err = parse_header(path, &bytes[..20]).unwrap_err().to_string();
        assert!(err.contains("the header is cut off after 20 bytes"), "{err}");

        let mut future = bytes.clone();
        future[8] = 2;
        let err = parse_header(path, &future).unwrap_err().to_string();
        assert!(err.contains("header format 2 is not the one this vrseg reads (1)"), "{err}");

        let mut huge = bytes.clone();
        huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_header(path, &huge).unwrap_err().to_string().contains("runs past the end"));
    }

    fn h100() -> RunningOn<'static> {
        RunningOn {
            tensorrt: TrtVersion::new(10, 8, 0),
            ordinal: 0,
            gpu_name: "NVIDIA H100 80GB HBM3",
            compute_capability: (9, 0),
        }
    }

    #[test]
    fn another_tensorrt_release_is_refused_with_both_versions() {
        let running = RunningOn { tensorrt: TrtVersion::new(10, 9, 0), ..h100() };
        let err = check_compatible(Path::new("engines/x.engine"), &metadata(), &running).unwrap_err().to_string();
        assert_eq!(
            err,
            "engines/x.engine was built with TensorRT 10.8.0, but this machine has TensorRT 10.9.0: a TensorRT engine \
             loads only into the release that built it; rebuild it here with `vrseg build-engine --backend tensorrt`"
        );
    }

    #[test]
    fn another_gpu_architecture_is_refused_and_another_model_warned() {
        let rtx = RunningOn { gpu_name: "NVIDIA GeForce RTX 4090", compute_capability: (8, 9), ..h100() };
        let err = check_compatible(Path::new("engines/x.engine"), &metadata(), &rtx).unwrap_err().to_string();
        assert_eq!(
            err,
            "engines/x.engine was built for NVIDIA H100 80GB HBM3 (sm_90), but GPU 0 is NVIDIA GeForce RTX 4090 \
             (sm_89): a TensorRT engine runs only on the GPU architecture it was built on; rebuild it on this GPU \
             with `vrseg build-engine --backend tensorrt`"
        );

        let h200 = RunningOn { gpu_name: "NVIDIA H200", ..h100() };
        let warnings = check_compatible(Path::new("engines/x.engine"), &metadata(), &h200).unwrap();
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("built on NVIDIA H100 80GB HBM3, this is NVIDIA H200"), "{warnings:?}");

        assert!(check_compatible(Path::new("x"), &metadata(), &h100()).unwrap().is_empty());
    }

    #[test]
    fn atomic_write_leaves_the_whole_file_or_nothing() {
        let dir = std::env::temp_dir().join(format!("vrseg-trt-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.engine");
        write_atomically(&path, &[b"abc", b"def"]).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"abcdef");
        assert!(!partial_path(&path).exists());

        // A directory that does not exist: the error names the target, nothing is left.
        let missing = dir.join("no/such/dir/y.engine");
        let err = write_atomically(&missing, &[b"abc"]).unwrap_err().to_string();
        assert!(err.starts_with(&format!("could not write {}", missing.display())), "{err}");
        assert!(!partial_path(&missing).exists());

        // Written but not committed: the partial file exists until dropped, the target never.
        let target = dir.join("z.engine");
        let partial = PartialFile::write(&target, &[b"whole"]).unwrap();
        assert_eq!(partial.path(), partial_path(&target));
        assert_eq!(std::fs::read(partial.path()).unwrap(), b"whole");
        drop(partial);
        assert!(!partial_path(&target).exists() && !target.exists());
        let partial = PartialFile::write(&target, &[b"whole"]).unwrap();
        partial.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"whole");
        assert!(!partial_path(&target).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn engine_file_maps_and_checks() {
        let dir = std::env::temp_dir().join(format!("vrseg-trt-map-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.engine");
        let plan = vec![7u8; 3000];
        let header = encode_header(&metadata(), &plan);
        write_atomically(&path, &[&header, &plan]).unwrap();
        let file = EngineFile::open(&path).unwrap();
        assert_eq!(file.plan(), &plan[..]);
        assert_eq!(file.metadata(), Some(&metadata()));

        assert!(has_engine_magic(&path));
        let bare = dir.join("bare.engine");
        std::fs::write(&bare, b"a trtexec plan").unwrap();
        assert!(!has_engine_magic(&bare) && !has_engine_magic(&dir.join("missing.engine")));
        let file = EngineFile::open(&bare).unwrap();
        assert!(file.metadata().is_none());
        assert_eq!(file.plan(), b"a trtexec plan");

        let err = EngineFile::open(&dir.join("missing.engine")).unwrap_err().to_string();
        assert!(err.starts_with("could not read ") && err.contains("missing.engine"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
