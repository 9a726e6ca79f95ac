//! CLIP preprocessing against clip-retrieval's reference tensors (OpenAI `clip.load("ViT-B/32")`
//! preprocess: PIL 13 decode and bicubic resize, torchvision crop), on 7 photos with extreme aspect
//! ratios.
use std::io::Read;

use cm3_embed::preprocess::{CLIP_MEAN, CLIP_SIZE, CLIP_STD, preprocess, preprocess_bytes};
use image::{DynamicImage, RgbImage};

const ORDER: [&str; 7] = [
    "123_456", "208_495", "416_264", "456_123", "321_421", "389_535", "524_316",
];
const PER: usize = 3 * 224 * 224;

fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut out)
        .expect("gunzip");
    out
}

/// The reference pixels: a uint8 .npy (7 x 3 x 224 x 224) recovered exactly from the float tensors.
fn reference() -> Vec<u8> {
    let npy = gunzip(include_bytes!(
        "fixtures/clip_preprocess/reference_u8.npy.gz"
    ));
    assert_eq!(&npy[..6], b"\x93NUMPY");
    let header_len = usize::from(u16::from_le_bytes([npy[8], npy[9]]));
    let header = std::str::from_utf8(&npy[10..10 + header_len]).expect("header");
    assert!(
        header.contains("'|u1'") && header.contains("(7, 3, 224, 224)"),
        "{header}"
    );
    let data = npy[10 + header_len..].to_vec();
    assert_eq!(data.len(), 7 * PER);
    data
}

/// Max and mean absolute error of a preprocessed tensor against reference image `index`.
fn errors(got: &[f32], reference: &[u8], index: usize) -> (f32, f64) {
    assert_eq!(got.len(), PER);
    let (mut max, mut sum) = (0f32, 0f64);
    for (j, (&g, &r)) in got
        .iter()
        .zip(&reference[index * PER..(index + 1) * PER])
        .enumerate()
    {
        let c = j / (224 * 224);
        let e = (g - (f32::from(r) / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c]).abs();
        max = max.max(e);
        sum += f64::from(e);
    }
    (max, sum / PER as f64)
}

/// From PIL's decoded pixels, resize + crop + normalise must equal the reference exactly: this is
/// Pillow's fixed-point bicubic, reimplemented.
#[test]
fn resize_crop_normalise_is_bit_exact_from_the_same_pixels() {
    let reference = reference();
    let decoded = gunzip(include_bytes!(
        "fixtures/clip_preprocess/pil_decoded_rgb.bin.gz"
    ));
    let mut offset = 0;
    for name in ["123_456", "208_495", "456_123"] {
        let (w, h) = name
            .split_once('_')
            .map(|(w, h)| (w.parse::<u32>().expect("w"), h.parse::<u32>().expect("h")))
            .expect("size");
        let n = (w * h * 3) as usize;
        let img = RgbImage::from_raw(w, h, decoded[offset..offset + n].to_vec()).expect("image");
        offset += n;
        let got = preprocess(&DynamicImage::ImageRgb8(img), CLIP_SIZE).expect("preprocess");
        let index = ORDER.iter().position(|o| *o == name).expect("order");
        let (max, _) = errors(&got, &reference, index);
        // Only f32 rounding of the normalisation remains.
        assert!(max < 1e-6, "{name}: max abs error {max}");
    }
    assert_eq!(offset, decoded.len());
}

/// From the JPEG files. PIL decodes with libjpeg-turbo; the default build decodes with zune-jpeg,
/// whose IDCT and chroma upsampling differ by up to 4 levels in a few pixels (measured here: max
/// 0.057, mean 0.0035 after normalisation, where one level is 0.0146). With the `turbojpeg` feature
/// the decoder is libjpeg-turbo itself and the result must match to the tolerance.
#[test]
fn matches_openai_clip_preprocessing_from_jpeg_files() {
    let reference = reference();
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/clip_preprocess");
    let (mut max, mut mean_sum) = (0f32, 0f64);
    for (i, name) in ORDER.iter().enumerate() {
        let data = std::fs::read(dir.join(format!("{name}.jpg"))).expect("image");
        let got = preprocess_bytes(&data, CLIP_SIZE).expect("preprocess");
        let (m, mean) = errors(&got, &reference, i);
        println!("{name}: max abs error {m:.4}, mean {mean:.5}");
        max = max.max(m);
        mean_sum += mean;
    }
    let mean = mean_sum / ORDER.len() as f64;
    println!("all: max abs error {max:.4}, mean abs error {mean:.5}");
    let (max_bound, mean_bound) = if cfg!(feature = "turbojpeg") {
        (0.02, 0.002)
    } else {
        (0.06, 0.004)
    };
    assert!(max <= max_bound, "max abs error {max} > {max_bound}");
    assert!(mean <= mean_bound, "mean abs error {mean} > {mean_bound}");
}
