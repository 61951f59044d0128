//! Helpers shared by the test harnesses and benches (GPU selection lives in
//! `gpu::gpu_for_tests`).

use std::path::PathBuf;

use crate::ops::yolo_seg::YoloSegShape;
use crate::selftest::SplitMix64;

/// The committed test clips: `$VRSEG_TEST_DATA/clips` when set (the GPU
/// bundle carries the data outside the source tree), else tests/data/clips.
pub fn clips_dir() -> PathBuf {
    match std::env::var_os("VRSEG_TEST_DATA") {
        Some(dir) => PathBuf::from(dir).join("clips"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/clips"),
    }
}

/// The committed model fixtures (`$VRSEG_TEST_DATA/models`, else tests/data/models).
pub fn models_dir() -> PathBuf {
    match std::env::var_os("VRSEG_TEST_DATA") {
        Some(dir) => PathBuf::from(dir).join("models"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/models"),
    }
}

/// Fills one image's YOLO-seg `output0` (`[4 + classes + coefficients,
/// anchors]`) with background: random boxes (centres in 0..640, 2..200 wide,
/// 2..300 high), every class score below `background`, mask coefficients in
/// [-1, 1). Callers then raise the anchors they want detected.
pub fn fill_background_head(rng: &mut SplitMix64, head: &mut [f32], shape: &YoloSegShape, background: f32) {
    let (a, nc, nm) = (shape.anchors, shape.classes, shape.coefficients);
    for anchor in 0..a {
        head[anchor] = rng.uniform_f32(0.0, 640.0);
        head[a + anchor] = rng.uniform_f32(0.0, 640.0);
        head[2 * a + anchor] = rng.uniform_f32(2.0, 200.0);
        head[3 * a + anchor] = rng.uniform_f32(2.0, 300.0);
        for c in 0..nc {
            head[(4 + c) * a + anchor] = rng.uniform_f32(0.0, background);
        }
        for c in 0..nm {
            head[(4 + nc + c) * a + anchor] = rng.uniform_f32(-1.0, 1.0);
        }
    }
}

/// Stand-in TensorRT libraries for tests on machines without TensorRT,
/// built from tests/data/tensorrt/fake_tensorrt.cpp against the headers the
/// shim was compiled with (see that file for what they do).
#[cfg(vrseg_tensorrt_shim)]
pub mod tensorrt_fakes {
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::sync::OnceLock;

    use crate::engine::tensorrt::TrtVersion;

    /// The three stand-ins: libnvinfer, libnvinfer without its factories
    /// (a library that is not TensorRT), and libnvonnxparser.
    #[derive(Debug, Clone)]
    pub struct Fakes {
        pub nvinfer: PathBuf,
        pub nvinfer_bare: PathBuf,
        pub parser: PathBuf,
    }

    /// The file names `fakes()` looks for in `$VRSEG_TEST_TENSORRT_FAKES`.
    pub const FILES: [&str; 3] = ["nvinfer.so", "nvinfer-bare.so", "parser.so"];

    /// The stand-ins: prebuilt in `$VRSEG_TEST_TENSORRT_FAKES` (the GPU
    /// bundle ships them: its machine may have no C++ compiler), else
    /// compiled once per process with `$CXX` or `c++`.
    pub fn fakes() -> &'static Fakes {
        static FAKES: OnceLock<Fakes> = OnceLock::new();
        FAKES.get_or_init(|| match std::env::var_os("VRSEG_TEST_TENSORRT_FAKES") {
            Some(dir) => {
                let dir = PathBuf::from(dir);
                let [nvinfer, nvinfer_bare, parser] = FILES.map(|f| dir.join(f));
                for f in [&nvinfer, &nvinfer_bare, &parser] {
                    assert!(f.is_file(), "VRSEG_TEST_TENSORRT_FAKES: {} is missing", f.display());
                }
                Fakes { nvinfer, nvinfer_bare, parser }
            }
            None => {
                let dir = std::env::temp_dir().join(format!("vrseg-trt-fakes-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).expect("a scratch directory for the stand-in libraries");
                let [nvinfer, nvinfer_bare, parser] = FILES.map(|f| dir.join(f));
                compile(&nvinfer, &[]);
                compile(&nvinfer_bare, &["-DFAKE_NO_FACTORIES"]);
                compile(&parser, &["-DFAKE_PARSER"]);
                Fakes { nvinfer, nvinfer_bare, parser }
            }
        })
    }

    /// Compiles fake_tensorrt.cpp into the shared library `out`.
    pub fn compile(out: &Path, defines: &[&str]) {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tensorrt/fake_tensorrt.cpp");
        let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let status = Command::new(&compiler)
            .args(["-std=c++17", "-shared", "-fPIC", "-O0", "-w", "-o"])
            .arg(out)
            .arg("-isystem")
            .arg(env!("VRSEG_TENSORRT_INCLUDE"))
            .arg("-isystem")
            .arg(env!("VRSEG_TENSORRT_CUDA_INCLUDE"))
            .args(defines)
            .arg(&source)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run the C++ compiler `{compiler}` ($CXX or c++) to build the stand-in TensorRT: {e}; \
                     install g++, or set VRSEG_TEST_TENSORRT_FAKES to a directory of prebuilt ones \
                     (tools/gpu-bundle.sh makes them)"
                )
            });
        assert!(status.success(), "compiling {} into {} failed", source.display(), out.display());
    }

    /// A fresh `TENSORRT_ROOT` under the temp dir: `lib/libnvinfer.so.MAJOR`
    /// (a copy of `nvinfer`, so each root loads its own instance), the
    /// parser as `lib/FILE_NAME` (plus the `libnvonnxparser.so.MAJOR` link
    /// when the name differs), and `lib/fake_version`, the version the
    /// stand-ins report.
    pub fn fake_root(
        tag: &str,
        major: u32,
        nvinfer: &Path,
        parser: Option<(&Path, &str)>,
        version: TrtVersion,
    ) -> PathBuf {
        let root = std::env::temp_dir().join(format!("vrseg-trt-root-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let lib = root.join("lib");
        std::fs::create_dir_all(&lib).expect("a scratch TENSORRT_ROOT");
        std::fs::copy(nvinfer, lib.join(format!("libnvinfer.so.{major}"))).expect("copying the stand-in libnvinfer");
        if let Some((parser, file_name)) = parser {
            std::fs::copy(parser, lib.join(file_name)).expect("copying the stand-in parser");
            let soname = format!("libnvonnxparser.so.{major}");
            if file_name != soname {
                std::os::unix::fs::symlink(file_name, lib.join(soname)).expect("linking the parser's soname");
            }
        }
        std::fs::write(lib.join("fake_version"), version.encoded().to_string()).expect("writing fake_version");
        root
    }
}

/// The symbols of the ELF objects in a static archive (`ar` format), read
/// without binutils so that the TensorRT shim's symbol checks run on
/// machines without `nm` (the GPU bundle's).
pub mod elf_symbols {
    /// One symbol-table entry of an object in the archive.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Symbol {
        pub name: String,
        /// Defined in the object (not `SHN_UNDEF`).
        pub defined: bool,
        /// `STB_GLOBAL` or `STB_WEAK`.
        pub global: bool,
        /// `STT_FUNC`.
        pub function: bool,
    }

    fn u16_at(b: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
    }
    fn u32_at(b: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
    }
    fn u64_at(b: &[u8], at: usize) -> Option<usize> {
        usize::try_from(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?)).ok()
    }

    /// The symbols of every ELF64 little-endian member of `archive`; Err
    /// names what could not be read.
    pub fn archive_symbols(archive: &[u8]) -> Result<Vec<Symbol>, String> {
        let mut rest = archive.strip_prefix(b"!<arch>\n").ok_or("not an ar archive")?;
        let mut symbols = Vec::new();
        while rest.len() >= 60 {
            let header = &rest[..60];
            let size: usize = std::str::from_utf8(&header[48..58])
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or("an archive member has an unreadable size")?;
            let data = rest.get(60..60 + size).ok_or("an archive member runs past the end")?;
            if data.starts_with(b"\x7fELF") {
                symbols.extend(object_symbols(data)?);
            }
            rest = &rest[(60 + size + size % 2).min(rest.len())..];
        }
        Ok(symbols)
    }

    /// The symbol table of one ELF64 little-endian relocatable object.
    pub fn object_symbols(elf: &[u8]) -> Result<Vec<Symbol>, String> {
        let bad = |what: &str| format!("malformed ELF object: {what}");
        if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
            return Err(bad("not ELF64 little-endian"));
        }
        let shoff = u64_at(elf, 0x28).ok_or_else(|| bad("header"))?;
        let shentsize = usize::from(u16_at(elf, 0x3a).ok_or_else(|| bad("header"))?);
        let shnum = usize::from(u16_at(elf, 0x3c).ok_or_else(|| bad("header"))?);
        let section = |i: usize| -> Option<(u32, usize, usize, usize, usize)> {
            let at = shoff.checked_add(i.checked_mul(shentsize)?)?;
            Some((
                u32_at(elf, at + 4)?,
                u64_at(elf, at + 0x18)?,
                u64_at(elf, at + 0x20)?,
                u32_at(elf, at + 0x28)? as usize,
                u64_at(elf, at + 0x38)?,
            ))
        };
        let mut symbols = Vec::new();
        for i in 0..shnum {
            let (kind, offset, size, link, entsize) = section(i).ok_or_else(|| bad("section header"))?;
            const SHT_SYMTAB: u32 = 2;
            if kind != SHT_SYMTAB {
                continue;
            }
            let (_, str_offset, str_size, _, _) = section(link).ok_or_else(|| bad("string table header"))?;
            let strings = elf.get(str_offset..str_offset + str_size).ok_or_else(|| bad("string table"))?;
            let table = elf.get(offset..offset + size).ok_or_else(|| bad("symbol table"))?;
            for entry in table.chunks_exact(entsize.max(24)) {
                let name_at = u32_at(entry, 0).ok_or_else(|| bad("symbol"))? as usize;
                let name = strings.get(name_at..).and_then(|s| s.split(|&b| b == 0).next()).unwrap_or_default();
                if name.is_empty() {
                    continue;
                }
                let (info, shndx) = (entry[4], u16_at(entry, 6).ok_or_else(|| bad("symbol"))?);
                symbols.push(Symbol {
                    name: String::from_utf8_lossy(name).into_owned(),
                    defined: shndx != 0,
                    global: matches!(info >> 4, 1 | 2),
                    function: info & 0xf == 2,
                });
            }
        }
        Ok(symbols)
    }
}
