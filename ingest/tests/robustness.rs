//! Hostile input never panics, and normalisation is stable: property tests.
use std::io::Cursor;
use std::sync::OnceLock;

use cm3_ingest::IngestConfig;
use cm3_ingest::config::InputFormat;
use cm3_ingest::normalize::{normalize_caption, normalize_image};
use cm3_ingest::source::SourceSpec;
use image::{DynamicImage, ImageBuffer, ImageFormat, Rgb};
use proptest::prelude::*;

/// Small valid images in every format ingest decodes, to be damaged by the tests.
fn seeds() -> &'static Vec<Vec<u8>> {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let img = DynamicImage::ImageRgb8(ImageBuffer::from_fn(40, 30, |x, y| {
            Rgb([(x * 6) as u8, (y * 8) as u8, 128])
        }));
        [
            ImageFormat::Jpeg,
            ImageFormat::Png,
            ImageFormat::Gif,
            ImageFormat::WebP,
            ImageFormat::Bmp,
            ImageFormat::Tiff,
        ]
        .into_iter()
        .map(|f| {
            let mut out = Cursor::new(Vec::new());
            let src = if f == ImageFormat::Gif {
                DynamicImage::ImageRgba8(img.to_rgba8())
            } else {
                img.clone()
            };
            src.write_to(&mut out, f).expect("encode seed");
            out.into_inner()
        })
        .collect()
    })
}

fn damage(mut data: Vec<u8>, flips: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    for &(pos, byte) in flips {
        let n = data.len();
        if n > 0 {
            data[pos % n] = byte;
        }
    }
    if let Some(c) = cut {
        let n = data.len();
        data.truncate(c % (n + 1));
    }
    data
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn damaged_images_are_rejected_or_normalised_never_panic(
        seed in 0usize..6,
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let data = damage(seeds()[seed].clone(), &flips, cut);
        let cfg = IngestConfig { image_size: 32, ..IngestConfig::default() };
        if let Ok(n) = normalize_image(&data, &cfg) {
            // Whatever was accepted is a real 32x32 image.
            let out = image::load_from_memory(&n.bytes).expect("output decodes");
            prop_assert_eq!((out.width(), out.height()), (32, 32));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = normalize_image(&data, &IngestConfig::default());
    }

    #[test]
    fn caption_normalisation_is_idempotent(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
        let cfg = IngestConfig::default();
        if let Ok(c) = normalize_caption(&raw, &cfg) {
            prop_assert!(!c.text.is_empty());
            prop_assert!(!c.text.starts_with(' ') && !c.text.ends_with(' ') && !c.text.contains("  "));
            let again = normalize_caption(c.text.as_bytes(), &cfg).expect("normalised text is valid");
            prop_assert_eq!(again.text, c.text);
            prop_assert!(!again.repaired);
        }
    }

    #[test]
    fn damaged_tar_shards_never_panic_and_every_record_has_a_key(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("shard.tar");
        let mut b = tar::Builder::new(Vec::new());
        for (i, seed) in seeds().iter().take(3).enumerate() {
            for (name, data) in [(format!("{i:04}.jpg"), seed.clone()), (format!("{i:04}.txt"), b"a caption".to_vec())] {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_path(&name).expect("path");
                h.set_cksum();
                b.append(&h, data.as_slice()).expect("append");
            }
        }
        let bytes = damage(b.into_inner().expect("tar"), &flips, cut);
        std::fs::write(&path, bytes).expect("write");
        let src = SourceSpec { id: path.display().to_string(), path, format: InputFormat::Webdataset, image_root: None };
        let mut keys = Vec::new();
        src.read(&IngestConfig::default(), &|_| true, &mut |r| { keys.push(r.key); true });
        prop_assert!(keys.iter().all(|k| !k.is_empty()));
    }
}
