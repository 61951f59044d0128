//! Reads the table of contents of an embedded fatbin, so that tests and
//! `vrseg info --kernels` can show which architectures each module carries
//! without `cuobjdump`. Layout (little-endian), as nvcc's fatbinary writes it:
//! a 16-byte header {magic 0xBA55ED50: u32, version: u16, header_size: u16,
//! payload_size: u64}, then entries {kind: u16 (1 PTX, 2 ELF/SASS), _: u16,
//! header_size: u32, payload_size: u64, ..., arch: u32 at byte 28}.

pub const FATBIN_MAGIC: u32 = 0xBA55_ED50;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeKind {
    Ptx,
    Sass,
    Other(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FatbinEntry {
    pub kind: CodeKind,
    /// Compute capability ×10, e.g. 90 for sm_90.
    pub arch: u32,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The entries of a fatbin, or `None` if the bytes are not one.
pub fn entries(bytes: &[u8]) -> Option<Vec<FatbinEntry>> {
    if u32_at(bytes, 0)? != FATBIN_MAGIC {
        return None;
    }
    let header = usize::from(u16_at(bytes, 6)?);
    let payload = usize::try_from(u64_at(bytes, 8)?).ok()?;
    let end = header.checked_add(payload)?.min(bytes.len());
    let mut at = header;
    let mut out = Vec::new();
    while at + 32 <= end {
        let kind = match u16_at(bytes, at)? {
            1 => CodeKind::Ptx,
            2 => CodeKind::Sass,
            k => CodeKind::Other(k),
        };
        let entry_header = usize::try_from(u32_at(bytes, at + 4)?).ok()?;
        let size = usize::try_from(u64_at(bytes, at + 8)?).ok()?;
        out.push(FatbinEntry { kind, arch: u32_at(bytes, at + 28)? });
        at = at.checked_add(entry_header)?.checked_add(size)?;
        if entry_header == 0 {
            return None;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::Module;

    #[test]
    fn every_module_has_sass_for_each_built_arch_and_ptx_for_the_lowest() {
        let archs: Vec<u32> = env!("VRSEG_CUDA_ARCHS_BUILT").split(',').map(|a| a.parse().unwrap()).collect();
        let lowest = *archs.iter().min().unwrap();
        for &m in Module::ALL {
            let e = entries(m.fatbin())
                .unwrap_or_else(|| panic!("kernels/{}.cu: embedded bytes are not a fatbin", m.name()));
            for &arch in &archs {
                assert!(
                    e.contains(&FatbinEntry { kind: CodeKind::Sass, arch }),
                    "kernels/{}.cu lacks SASS for sm_{arch}: {e:?}",
                    m.name()
                );
            }
            assert!(
                e.contains(&FatbinEntry { kind: CodeKind::Ptx, arch: lowest }),
                "kernels/{}.cu lacks PTX for sm_{lowest}: {e:?}",
                m.name()
            );
        }
    }

    #[test]
    fn rejects_bytes_that_are_not_a_fatbin() {
        assert_eq!(entries(b"not a fatbin at all, clearly"), None);
        assert_eq!(entries(&[]), None);
        let mut truncated = FATBIN_MAGIC.to_le_bytes().to_vec();
        truncated.extend_from_slice(&[1, 0, 16, 0]);
        assert_eq!(entries(&truncated), None);
    }
}
