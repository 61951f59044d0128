//! `--output masks`: numbered gray PNGs, exact pixels, whole files only.

use vrseg::video::encode::{FrameData, InputFrame};
use vrseg::video::mux::png_sequence::MaskPngWriter;

use crate::tools::scratch;

fn read_png(path: &std::path::Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Grayscale);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[test]
fn masks_are_numbered_exact_gray_pngs() {
    let dir = scratch("masks").join("out");
    let (w, h, pitch) = (33usize, 17usize, 40usize);
    let mut writer = MaskPngWriter::create(&dir, "frame_", w as u32, h as u32, 3).unwrap();
    let mut expected = Vec::new();
    for t in 0..3usize {
        let mut rows = vec![0xAAu8; pitch * h];
        for y in 0..h {
            for x in 0..w {
                rows[y * pitch + x] = ((x * 7 + y * 13 + t * 31) % 256) as u8;
            }
        }
        let path = writer.write(&InputFrame { data: FrameData::Host { data: &rows, pitch }, pts: t as i64 }).unwrap();
        assert_eq!(path, dir.join(format!("frame_{t:06}.png")));
        expected.push(rows.chunks(pitch).flat_map(|r| r[..w].to_vec()).collect::<Vec<u8>>());
    }
    assert_eq!(writer.written(), 3);
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["frame_000000.png", "frame_000001.png", "frame_000002.png"]);
    for (t, want) in expected.iter().enumerate() {
        let (pw, ph, pixels) = read_png(&dir.join(&names[t]));
        assert_eq!((pw, ph), (w as u32, h as u32));
        assert!(&pixels == want, "frame {t} pixels differ");
    }
}

#[test]
fn padding_grows_with_the_frame_count_and_bad_frames_leave_nothing() {
    let dir = scratch("masks_digits");
    let mut writer = MaskPngWriter::create(&dir, "m", 4, 4, 12_345_678).unwrap();
    assert_eq!(writer.path_of(7), dir.join("m00000007.png"));
    let short = [0u8; 5];
    let err = writer.write(&InputFrame { data: FrameData::Host { data: &short, pitch: 4 }, pts: 0 }).unwrap_err();
    assert!(err.to_string().contains("frame 0"), "{err}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}
