//! Tests of the compiled shim that need no TensorRT: its symbols against its
//! header (read from its archive, without binutils), and its loader driven
//! through stand-in libraries built from tests/data/tensorrt/fake_tensorrt.cpp
//! with the same headers (dlopen,
//! dlsym, version checks, the logger quoting TensorRT's errors, the ONNX
//! parser checks). What only a GPU with TensorRT can show (deserialising,
//! enqueueing, building) is not here: see the README's TensorRT section.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::handles::{Library, Network, Runtime};
use super::search::LibrarySearch;
use super::version::TrtVersion;
use super::{header_version, library_compatible, load_library, TensorRtError};
use crate::testing::elf_symbols::{archive_symbols as archive_symbols_of, Symbol};
use crate::testing::tensorrt_fakes;

const HEADER: &str = include_str!("shim.h");
const BINDINGS: &str = include_str!(concat!(env!("OUT_DIR"), "/tensorrt_shim_sys.rs"));

/// Function names declared in shim.h (comment lines and typedefs skipped).
fn header_functions() -> BTreeSet<String> {
    HEADER
        .lines()
        .map(|l| l.split("/*").next().unwrap_or_default().trim())
        .filter(|l| !l.starts_with('*') && !l.starts_with("typedef"))
        .filter_map(|l| l.split_once('(').map(|(before, _)| before))
        .filter_map(|before| before.split_whitespace().last())
        .map(|name| name.trim_start_matches('*').to_string())
        .filter(|name| name.starts_with("vrseg_trt_"))
        .collect()
}

/// The shim's static archive: `$VRSEG_TEST_TENSORRT_SHIM_ARCHIVE` (the GPU
/// bundle ships it beside the test binaries) or the one build.rs wrote.
fn archive_symbols() -> Vec<Symbol> {
    let archive = std::env::var_os("VRSEG_TEST_TENSORRT_SHIM_ARCHIVE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("VRSEG_TENSORRT_SHIM_ARCHIVE")));
    let bytes =
        std::fs::read(&archive).unwrap_or_else(|e| panic!("cannot read the shim archive {}: {e}", archive.display()));
    archive_symbols_of(&bytes).unwrap_or_else(|e| panic!("{}: {e}", archive.display()))
}

#[test]
fn the_shim_exports_exactly_what_its_header_declares() {
    let declared = header_functions();
    assert!(declared.len() >= 30, "the header parse found only {declared:?}");
    let exported: BTreeSet<String> = archive_symbols()
        .into_iter()
        .filter(|s| s.defined && s.global && s.function && s.name.starts_with("vrseg_trt_"))
        .map(|s| s.name)
        .collect();
    let missing: Vec<_> = declared.difference(&exported).collect();
    let extra: Vec<_> = exported.difference(&declared).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "declared, not exported: {missing:?}; exported, not declared: {extra:?}"
    );
}

#[test]
fn bindgen_declares_every_function_of_the_header() {
    let bound: BTreeSet<String> = BINDINGS
        .split("pub fn ")
        .skip(1)
        .filter_map(|rest| rest.split('(').next())
        .map(|name| name.trim().to_string())
        .collect();
    assert_eq!(bound, header_functions());
}

#[test]
fn the_shim_references_no_tensorrt_or_cuda_symbol() {
    // What lets vrseg link and start where TensorRT is absent: TensorRT is
    // reached through dlsym'd factories and virtual calls only.
    // Mangled C++ names keep namespaces as plain words (`_ZN8nvinfer1…`).
    let undefined: Vec<String> = archive_symbols().into_iter().filter(|s| !s.defined).map(|s| s.name).collect();
    let offending: Vec<&String> = undefined
        .iter()
        .filter(|l| ["nvinfer1", "nvonnxparser", "_INTERNAL", "getInfer", "cuda", "Nv"].iter().any(|n| l.contains(n)))
        .collect();
    assert!(offending.is_empty(), "the shim references: {offending:?}");
    assert!(undefined.iter().any(|s| s == "dlopen"), "the shim should load TensorRT with dlopen: {undefined:?}");
}

fn headers() -> TrtVersion {
    header_version().expect("this build has the shim")
}

#[test]
fn header_version_is_the_one_build_rs_found() {
    let described = super::headers_description();
    assert!(described.starts_with(&format!("TensorRT {} at ", headers())), "{described}");
    assert!(headers().major >= 10);
}

#[test]
fn the_compatibility_rule_is_same_major_and_not_older() {
    let h = headers();
    assert!(library_compatible(h));
    assert!(library_compatible(TrtVersion::new(h.major, h.minor, h.patch + 3)));
    assert!(library_compatible(TrtVersion::new(h.major, h.minor + 1, 0)));
    assert!(!library_compatible(TrtVersion::new(h.major + 1, 0, 0)));
    assert!(!library_compatible(TrtVersion::new(h.major - 1, 99, 0)));
    if h.minor > 0 {
        assert!(!library_compatible(TrtVersion::new(h.major, h.minor - 1, 99)));
    }
}

/// A fresh directory under the system's temp dir.
fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vrseg-trt-shim-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn search_in(root: &Path) -> LibrarySearch {
    LibrarySearch {
        root: Some(root.to_path_buf()),
        system: false,
        preferred_major: Some(headers().major),
        ld_library_path: None,
    }
}

#[test]
fn the_loader_says_tensorrt_not_found_and_where_it_searched() {
    let dir = scratch("absent");
    let search = search_in(&dir);
    let expected = format!(
        "TensorRT not found (searched: TENSORRT_ROOT={} (lib/, lib64/, targets/x86_64-linux-gnu/lib/, ./) for \
         libnvinfer.so.{major}, ",
        dir.display(),
        major = headers().major
    );
    let err = Library::open(&search).err().expect("nothing to load").to_string();
    assert!(err.starts_with(&expected), "{err}");
    assert!(err.ends_with("or add its lib directory to LD_LIBRARY_PATH"), "{err}");
    // The public loader gives the same sentence (and caches no failure).
    let err = load_library(&search).unwrap_err().to_string();
    assert!(err.starts_with(&expected), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The stand-in libraries (crate::testing::tensorrt_fakes), as (nvinfer,
/// nvinfer without factories, parser).
fn fakes() -> (&'static Path, &'static Path, &'static Path) {
    let f = tensorrt_fakes::fakes();
    (&f.nvinfer, &f.nvinfer_bare, &f.parser)
}

fn fake_root(tag: &str, nvinfer: &Path, parser: Option<(&Path, &str)>, version: TrtVersion) -> PathBuf {
    tensorrt_fakes::fake_root(tag, headers().major, nvinfer, parser, version)
}

#[test]
fn a_file_that_is_no_library_is_reported_beside_not_found() {
    let dir = scratch("garbage");
    std::fs::create_dir_all(dir.join("lib")).unwrap();
    let path = dir.join(format!("lib/libnvinfer.so.{}", headers().major));
    std::fs::write(&path, b"not a shared object").unwrap();
    let err = Library::open(&search_in(&dir)).err().unwrap().to_string();
    assert!(err.starts_with("TensorRT not found (searched: "), "{err}");
    // glibc's dlerror names the file and why it did not load.
    assert!(err.contains(&format!("); {}: ", path.display())), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_library_without_the_factories_is_refused() {
    let (_, bare, _) = fakes();
    let root = fake_root("bare", bare, None, headers());
    let err = Library::open(&search_in(&root)).err().unwrap().to_string();
    assert!(err.starts_with("loading TensorRT failed: "), "{err}");
    assert!(err.ends_with("does not export createInferRuntime_INTERNAL"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn another_major_version_is_refused_before_any_tensorrt_object_exists() {
    let (nvinfer, _, _) = fakes();
    let h = headers();
    let other = TrtVersion::new(if h.major == 10 { 11 } else { 10 }, 8, 0);
    let root = fake_root("major", nvinfer, None, other);
    let err = Library::open(&search_in(&root)).err().unwrap().to_string();
    let expected = format!(
        "TensorRT {other} ({}) does not match the TensorRT {h} headers vrseg's TensorRT backend was compiled against: \
         the major versions differ",
        root.join(format!("lib/libnvinfer.so.{}", h.major)).display()
    );
    assert!(err.starts_with(&expected), "{err}");
    assert!(err.ends_with("rebuild vrseg with TENSORRT_ROOT pointing at this TensorRT"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn an_older_library_of_the_same_major_is_refused() {
    let h = headers();
    if h.minor == 0 {
        return; // nothing older within this major
    }
    let (nvinfer, _, _) = fakes();
    let root = fake_root("older", nvinfer, None, TrtVersion::new(h.major, h.minor - 1, 0));
    let err = Library::open(&search_in(&root)).err().unwrap().to_string();
    assert!(err.contains("the library is older than the headers and may lack what they declare"), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_matching_library_loads_and_its_errors_reach_the_caller() {
    let (nvinfer, _, _) = fakes();
    let h = headers();
    let newer = TrtVersion::new(h.major, h.minor, h.patch + 1);
    let root = fake_root("match", nvinfer, None, newer);
    let library = Arc::new(Library::open(&search_in(&root)).unwrap());
    assert_eq!(library.version(), newer);
    assert_eq!(library.build(), Some(7));
    assert_eq!(Path::new(library.nvinfer_path()), root.join(format!("lib/libnvinfer.so.{}", h.major)));
    assert_eq!(library.parser_path(), None);

    // The factory fails as TensorRT does: null, and the reason in the log.
    let err = Runtime::new(&library).err().unwrap().to_string();
    assert_eq!(
        err,
        "createInferRuntime failed: createInferRuntime returned null (TensorRT: fake libnvinfer: no runtime here)"
    );

    let err = library.require_parser().unwrap_err().to_string();
    assert!(
        err.starts_with(&format!("TensorRT's ONNX parser not found (searched: TENSORRT_ROOT={}", root.display())),
        "{err}"
    );
    let err = Network::parse(&library, Path::new("model.onnx")).err().unwrap().to_string();
    assert!(err.starts_with("TensorRT's ONNX parser not found"), "{err}");
    drop(library);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn with_the_parser_a_build_reaches_the_builder_factory() {
    let (nvinfer, _, parser) = fakes();
    let h = headers();
    let soname = format!("libnvonnxparser.so.{}", h.major);
    let root = fake_root("parser", nvinfer, Some((parser, &soname)), h);
    let library = Arc::new(Library::open(&search_in(&root)).unwrap());
    assert_eq!(library.parser_path().map(PathBuf::from), Some(root.join("lib").join(&soname)));
    library.require_parser().unwrap();
    let err = Network::parse(&library, Path::new("model.onnx")).err().unwrap().to_string();
    assert_eq!(
        err,
        "parsing the ONNX model failed: createInferBuilder returned null (TensorRT: fake libnvinfer: no builder here)"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_parser_from_another_release_is_refused() {
    let (nvinfer, _, parser) = fakes();
    let h = headers();
    let file = format!("libnvonnxparser.so.{}.{}.0", h.major, h.minor + 1);
    let root = fake_root("parser-release", nvinfer, Some((parser, &file)), h);
    let library = Library::open(&search_in(&root)).unwrap();
    let err = library.require_parser().unwrap_err().to_string();
    let expected = format!(
        "TensorRT's ONNX parser {} is from TensorRT {}.{}.0, but libnvinfer (",
        std::fs::canonicalize(root.join("lib").join(&file)).unwrap().display(),
        h.major,
        h.minor + 1
    );
    assert!(err.starts_with(&expected), "{err}");
    assert!(err.ends_with(&format!(") is {h}: use the parser of the same TensorRT release")), "{err}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_rejected_build_request_never_loads_tensorrt() {
    // --calib is refused before the library search: no "not found" even here.
    let dir = scratch("request");
    let model = dir.join("m.onnx");
    std::fs::write(&model, b"x").unwrap();
    let request = super::BuildRequest {
        model,
        output: dir.join("m.engine"),
        precision: super::Precision::Int8,
        calibration: Some(dir.clone()),
        batch: None,
        input_size: None,
        workspace_mib: None,
        timing_cache: None,
        optimization_level: None,
        gpu: 0,
        verify: true,
    };
    let err = super::build_engine(&request, &search_in(&dir)).unwrap_err();
    assert!(matches!(err, TensorRtError::InvalidRequest(_)), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_process_wide_library_is_kept_per_search() {
    // A search that finds the stand-in opens it once; a search that finds
    // nothing still says so afterwards instead of getting the open library.
    let (nvinfer, _, _) = fakes();
    let root = fake_root("shared", nvinfer, None, headers());
    let found = search_in(&root);
    let first = super::handles::shared_library(&found).unwrap();
    let again = super::handles::shared_library(&found).unwrap();
    assert!(Arc::ptr_eq(&first, &again), "the same search reuses the open library");
    let empty = scratch("shared-empty");
    let err = load_library(&search_in(&empty)).unwrap_err().to_string();
    assert!(err.starts_with("TensorRT not found (searched: "), "{err}");
    std::fs::remove_dir_all(&empty).unwrap();
}
