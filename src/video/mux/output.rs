//! Output files written under a temporary name: `OUT.partial` (e.g. `matte.mp4.partial`)
//! while being written, renamed to `OUT` when complete, or to `NAME.partial.EXT` (e.g.
//! `matte.partial.mp4`) when a run was stopped early but the file was finalised. A file that
//! was neither (an error, a crash, a kill) never carries the finished name: errors remove the
//! temporary file, and a killed process leaves only `OUT.partial`.

use std::fs::File;
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The temporary name a file is written under: `OUT` + `.partial`.
pub fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    path.with_file_name(name)
}

/// The name of a finalised but incomplete output: `.partial` before the extension
/// (`matte.mp4` → `matte.partial.mp4`), so players still recognise the container.
pub fn partial_path(path: &Path) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_os_string()).unwrap_or_default();
    let mut name = stem;
    name.push(".partial");
    if let Some(ext) = path.extension() {
        name.push(".");
        name.push(ext);
    }
    path.with_file_name(name)
}

/// A file being written under its temporary name, with a byte position the writers use for
/// offsets. Dropped without [`OutputFile::commit`], it removes the temporary file.
pub struct OutputFile {
    final_path: PathBuf,
    temp_path: PathBuf,
    writer: Option<BufWriter<File>>,
    position: u64,
}

impl std::fmt::Debug for OutputFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputFile").field("final_path", &self.final_path).field("position", &self.position).finish()
    }
}

impl OutputFile {
    /// Creates (or truncates) `OUT.partial`.
    pub fn create(final_path: &Path) -> std::io::Result<OutputFile> {
        let temp_path = temporary_path(final_path);
        let file = File::create(&temp_path)?;
        Ok(OutputFile {
            final_path: final_path.to_path_buf(),
            temp_path,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
            position: 0,
        })
    }

    pub fn final_path(&self) -> &Path {
        &self.final_path
    }

    pub fn temp_path(&self) -> &Path {
        &self.temp_path
    }

    /// Bytes written so far (the offset of the next byte).
    pub fn position(&self) -> u64 {
        self.position
    }

    fn writer(&mut self) -> std::io::Result<&mut BufWriter<File>> {
        self.writer.as_mut().ok_or_else(|| std::io::Error::other("the output file was already closed"))
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer()?.write_all(bytes)?;
        self.position += bytes.len() as u64;
        Ok(())
    }

    /// Overwrites bytes already written at `offset` (a size field, a placeholder), then
    /// returns to the end.
    pub fn patch(&mut self, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        let end = self.position;
        if offset.checked_add(bytes.len() as u64).is_none_or(|e| e > end) {
            return Err(std::io::Error::other(format!(
                "patch of {} bytes at {offset} lies past the end ({end})",
                bytes.len()
            )));
        }
        let w = self.writer()?;
        w.seek(SeekFrom::Start(offset))?;
        w.write_all(bytes)?;
        w.seek(SeekFrom::Start(end))?;
        Ok(())
    }

    /// Flushes, syncs and renames the file to `target` (the final or the partial name).
    pub fn commit(mut self, target: &Path) -> std::io::Result<PathBuf> {
        let writer = self.writer.take().ok_or_else(|| std::io::Error::other("the output file was already closed"))?;
        let file = writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&self.temp_path, target)?;
        // Renamed: nothing left for Drop to remove.
        self.temp_path = PathBuf::new();
        Ok(target.to_path_buf())
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if !self.temp_path.as_os_str().is_empty() {
            drop(self.writer.take());
            // Best effort: an unfinished file must not stay behind looking like output; if
            // removal fails, its name still ends in `.partial`.
            let _ = std::fs::remove_file(&self.temp_path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(temporary_path(Path::new("/x/matte.mp4")), Path::new("/x/matte.mp4.partial"));
        assert_eq!(partial_path(Path::new("/x/matte.mp4")), Path::new("/x/matte.partial.mp4"));
        assert_eq!(partial_path(Path::new("out")), Path::new("out.partial"));
        assert_eq!(partial_path(Path::new("a.b.mkv")), Path::new("a.b.partial.mkv"));
    }
}
