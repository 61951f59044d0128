//! TensorRT version numbers as the libraries and headers encode them.

use std::fmt;

/// A TensorRT release, e.g. 10.8.0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct TrtVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl TrtVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> TrtVersion {
        TrtVersion { major, minor, patch }
    }

    /// Decodes `getInferLibVersion()` / `NV_TENSORRT_VERSION`: from TensorRT 10
    /// on `major * 10000 + minor * 100 + patch` (100800 is 10.8.0); before,
    /// `major * 1000 + minor * 100 + patch` (8601 is 8.6.1), reported so that
    /// an old library is named correctly in the error that refuses it.
    pub fn from_encoded(value: i32) -> Option<TrtVersion> {
        let v = u32::try_from(value).ok()?;
        if v >= 100_000 {
            Some(TrtVersion::new(v / 10_000, v / 100 % 100, v % 100))
        } else if v >= 1_000 {
            Some(TrtVersion::new(v / 1_000, v / 100 % 10, v % 100))
        } else {
            None
        }
    }

    /// The encoding of TensorRT 10 and later.
    pub fn encoded(self) -> i32 {
        (self.major * 10_000 + self.minor * 100 + self.patch) as i32
    }
}

impl fmt::Display for TrtVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The release in a library file name: `libnvonnxparser.so.10.8.0` → 10.8.0
/// (also `.so.10.8`); None for a bare `.so` or `.so.10`.
pub fn version_in_file_name(path: &str) -> Option<TrtVersion> {
    let name = path.rsplit('/').next()?;
    let suffix = &name[name.find(".so.")? + 4..];
    let mut parts = suffix.split('.').map(|p| p.parse::<u32>().ok());
    let major = parts.next()??;
    let minor = parts.next()??;
    let patch = parts.next().flatten().unwrap_or(0);
    Some(TrtVersion::new(major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_both_encodings() {
        assert_eq!(TrtVersion::from_encoded(100800), Some(TrtVersion::new(10, 8, 0)));
        assert_eq!(TrtVersion::from_encoded(110400), Some(TrtVersion::new(11, 4, 0)));
        assert_eq!(TrtVersion::from_encoded(101603), Some(TrtVersion::new(10, 16, 3)));
        assert_eq!(TrtVersion::from_encoded(8601), Some(TrtVersion::new(8, 6, 1)));
        assert_eq!(TrtVersion::from_encoded(-1), None);
        assert_eq!(TrtVersion::from_encoded(0), None);
        assert_eq!(TrtVersion::new(10, 16, 3).encoded(), 101603);
        assert_eq!(TrtVersion::new(11, 4, 0).to_string(), "11.4.0");
    }

    #[test]
    fn reads_versions_from_file_names() {
        assert_eq!(version_in_file_name("/opt/trt/lib/libnvonnxparser.so.10.8.0"), Some(TrtVersion::new(10, 8, 0)));
        assert_eq!(version_in_file_name("libnvinfer.so.11.4"), Some(TrtVersion::new(11, 4, 0)));
        assert_eq!(version_in_file_name("libnvinfer.so.10"), None);
        assert_eq!(version_in_file_name("libnvinfer.so"), None);
    }
}
