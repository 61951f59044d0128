//! What `vrseg build-engine --backend tensorrt` is asked to do, and the
//! checks made before TensorRT is loaded: a request that cannot work stops
//! here with a sentence, at no cost.

use std::path::{Path, PathBuf};

use super::error::TensorRtError;
use super::file::{BatchRange, MetadataTensor};
use super::version::TrtVersion;
use crate::engine::backend::SmokeReport;

/// How the builder may lower the model's precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// The ONNX model's own types (TensorRT 11's only mode).
    #[default]
    Model,
    /// Also FP16 kernels (TensorRT 10's `BuilderFlag::kFP16`).
    Fp16,
    /// INT8 for a model quantised with Q/DQ nodes (TensorRT 10's `kINT8`).
    Int8,
}

impl Precision {
    pub fn name(self) -> &'static str {
        match self {
            Precision::Model => "model",
            Precision::Fp16 => "fp16",
            Precision::Int8 => "int8",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildRequest {
    pub model: PathBuf,
    pub output: PathBuf,
    pub precision: Precision,
    /// `--calib DIR`: refused (see [`BuildRequest::check`]).
    pub calibration: Option<PathBuf>,
    pub batch: Option<BatchRange>,
    /// (height, width) for dynamic spatial dimensions.
    pub input_size: Option<(u32, u32)>,
    /// Builder workspace limit; None leaves TensorRT's default.
    pub workspace_mib: Option<u64>,
    /// Read before the build when it exists, written after.
    pub timing_cache: Option<PathBuf>,
    /// Builder optimisation level 0..=5; None leaves TensorRT's default (3).
    pub optimization_level: Option<u8>,
    pub gpu: usize,
    /// Load the written engine back and run it on zeros (`smoke_test`).
    pub verify: bool,
}

/// What a build produced, for the summary `build-engine` prints.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuildReport {
    pub output: PathBuf,
    pub bytes: u64,
    pub tensorrt: TrtVersion,
    /// "NVIDIA H100 80GB HBM3 (sm_90)"
    pub gpu: String,
    pub tensors: Vec<MetadataTensor>,
    pub seconds: f64,
    pub timing_cache: Option<PathBuf>,
    /// The engine run back through the runtime path, when asked.
    pub verified: Option<SmokeReport>,
    pub warnings: Vec<String>,
}

fn invalid(text: String) -> TensorRtError {
    TensorRtError::InvalidRequest(text)
}

/// The directory a file would be written into ("." for a bare name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

impl BuildRequest {
    /// Checks that need no TensorRT. `headers` is the TensorRT release the
    /// shim was compiled against (None without a shim).
    pub fn check(&self, headers: Option<TrtVersion>) -> Result<(), TensorRtError> {
        if self.calibration.is_some() {
            return Err(invalid(
                "INT8 calibration (--calib) is not supported: TensorRT 11 removed its calibrators \
                 (IInt8EntropyCalibrator2) and TensorRT 10 deprecated them; quantise the model with Q/DQ nodes \
                 instead (NVIDIA TensorRT Model Optimizer, `modelopt.onnx.quantization`) and build that model \
                 without --calib"
                    .into(),
            ));
        }
        match std::fs::metadata(&self.model) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(invalid(format!("{} is not a file; give the ONNX model", self.model.display()))),
            Err(source) => return Err(TensorRtError::Read { path: self.model.clone(), source }),
        }
        if self.output.is_dir() {
            return Err(invalid(format!(
                "{} is a directory; give the engine's file name, e.g. {}",
                self.output.display(),
                self.output.join("model.engine").display()
            )));
        }
        let dir = parent_dir(&self.output);
        if !dir.is_dir() {
            return Err(invalid(format!(
                "cannot write {}: the directory {} does not exist (create it first)",
                self.output.display(),
                dir.display()
            )));
        }
        if same_file(&self.model, &self.output) {
            return Err(invalid(format!("{} is the model itself; choose another output", self.output.display())));
        }
        if let Some(cache) = &self.timing_cache {
            if !parent_dir(cache).is_dir() {
                return Err(invalid(format!(
                    "cannot keep the timing cache at {}: the directory {} does not exist",
                    cache.display(),
                    parent_dir(cache).display()
                )));
            }
        }
        if self.workspace_mib == Some(0) {
            return Err(invalid("--workspace must be at least 1 MiB".into()));
        }
        if let Some(h) = headers.filter(|h| h.major >= 11) {
            match self.precision {
                Precision::Model => {}
                Precision::Fp16 => {
                    return Err(TensorRtError::Unsupported(format!(
                        "--fp16: this vrseg's TensorRT backend is compiled against TensorRT {h}, which builds strongly \
                         typed networks only: the ONNX model's own types set the precision. Export the model in FP16 \
                         (Ultralytics: `yolo export format=onnx half=True`) and build it without --fp16"
                    )))
                }
                Precision::Int8 => {
                    return Err(TensorRtError::Unsupported(format!(
                        "--int8: this vrseg's TensorRT backend is compiled against TensorRT {h}, which builds strongly \
                         typed networks only: INT8 comes from Q/DQ nodes in the model. Quantise it (NVIDIA TensorRT \
                         Model Optimizer) and build it without --int8"
                    )))
                }
            }
        }
        Ok(())
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Parses `MIN:OPT:MAX` (or a single `N` for N:N:N), 1 <= MIN <= OPT <= MAX.
pub fn parse_batch(text: &str) -> Result<BatchRange, String> {
    let parts: Vec<&str> = text.split(':').collect();
    let numbers: Option<Vec<u32>> = parts.iter().map(|p| p.trim().parse::<u32>().ok()).collect();
    let (min, opt, max) = match (numbers.as_deref(), parts.len()) {
        (Some(&[n]), 1) => (n, n, n),
        (Some(&[min, opt, max]), 3) => (min, opt, max),
        _ => return Err(format!("`{text}` is not MIN:OPT:MAX (e.g. 1:2:8) or a single batch size")),
    };
    if min == 0 || min > opt || opt > max {
        return Err(format!("`{text}` must satisfy 1 <= MIN <= OPT <= MAX"));
    }
    Ok(BatchRange { min, opt, max })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vrseg-trt-request-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn request(dir: &Path) -> BuildRequest {
        let model = dir.join("model.onnx");
        std::fs::write(&model, b"not really onnx").unwrap();
        BuildRequest {
            model,
            output: dir.join("model.engine"),
            precision: Precision::Model,
            calibration: None,
            batch: None,
            input_size: None,
            workspace_mib: None,
            timing_cache: None,
            optimization_level: None,
            gpu: 0,
            verify: true,
        }
    }

    #[test]
    fn a_sound_request_passes() {
        let dir = scratch("ok");
        let r = request(&dir);
        r.check(Some(TrtVersion::new(11, 4, 0))).unwrap();
        BuildRequest { precision: Precision::Fp16, ..r.clone() }.check(Some(TrtVersion::new(10, 8, 0))).unwrap();
        BuildRequest { precision: Precision::Int8, ..r }.check(None).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn calibration_is_refused_with_the_alternative() {
        let dir = scratch("calib");
        let r = BuildRequest { precision: Precision::Int8, calibration: Some(dir.clone()), ..request(&dir) };
        let err = r.check(Some(TrtVersion::new(10, 8, 0))).unwrap_err().to_string();
        assert!(err.starts_with("INT8 calibration (--calib) is not supported: TensorRT 11 removed"), "{err}");
        assert!(err.contains("Q/DQ"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tensorrt_11_refuses_precision_flags() {
        let dir = scratch("strong");
        let r = BuildRequest { precision: Precision::Fp16, ..request(&dir) };
        let err = r.check(Some(TrtVersion::new(11, 4, 0))).unwrap_err().to_string();
        assert!(err.starts_with("--fp16: this vrseg's TensorRT backend is compiled against TensorRT 11.4.0"), "{err}");
        assert!(err.contains("half=True"), "{err}");
        let r = BuildRequest { precision: Precision::Int8, ..r };
        assert!(r.check(Some(TrtVersion::new(11, 0, 0))).unwrap_err().to_string().starts_with("--int8: "));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn paths_are_checked_before_anything_runs() {
        let dir = scratch("paths");
        let ok = request(&dir);

        let r = BuildRequest { model: dir.join("missing.onnx"), ..ok.clone() };
        let err = r.check(None).unwrap_err().to_string();
        assert!(err.starts_with(&format!("could not read {}", dir.join("missing.onnx").display())), "{err}");

        let r = BuildRequest { output: dir.join("no/such/x.engine"), ..ok.clone() };
        let err = r.check(None).unwrap_err().to_string();
        assert!(err.contains("does not exist (create it first)"), "{err}");

        let r = BuildRequest { output: dir.clone(), ..ok.clone() };
        assert!(r.check(None).unwrap_err().to_string().contains("is a directory"));

        let r = BuildRequest { output: ok.model.clone(), ..ok.clone() };
        assert!(r.check(None).unwrap_err().to_string().contains("is the model itself"));

        let r = BuildRequest { timing_cache: Some(dir.join("nope/cache")), ..ok.clone() };
        assert!(r.check(None).unwrap_err().to_string().contains("cannot keep the timing cache"));

        let r = BuildRequest { workspace_mib: Some(0), ..ok };
        assert_eq!(r.check(None).unwrap_err().to_string(), "--workspace must be at least 1 MiB");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn batch_ranges_parse_and_are_ordered() {
        assert_eq!(parse_batch("1:2:8"), Ok(BatchRange { min: 1, opt: 2, max: 8 }));
        assert_eq!(parse_batch("4"), Ok(BatchRange { min: 4, opt: 4, max: 4 }));
        assert!(parse_batch("4:2:8").unwrap_err().contains("1 <= MIN <= OPT <= MAX"));
        assert!(parse_batch("0:1:2").is_err());
        assert!(parse_batch("1:2").unwrap_err().contains("is not MIN:OPT:MAX"));
        assert!(parse_batch("a:b:c").is_err());
    }
}
