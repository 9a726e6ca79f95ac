//! Every image format and colour layout ingest promises to decode, with EXIF orientation applied:
//! each test image is red on top and blue below once displayed, so the centre crop must be too.
use std::io::Cursor;

use cm3_ingest::IngestConfig;
use cm3_ingest::config::JpegCodec;
use cm3_ingest::normalize::normalize_image;
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb, Rgba};

const RED: [u8; 3] = [200, 30, 30];
const BLUE: [u8; 3] = [30, 30, 200];
const W: u32 = 300;
const H: u32 = 200;

fn top_red(x: u32, y: u32) -> [u8; 3] {
    let _ = x;
    if y < H / 2 { RED } else { BLUE }
}

fn encode(img: DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format).expect("encode");
    out.into_inner()
}

/// The JPEG codecs of this build: every check runs with each.
fn configs() -> Vec<IngestConfig> {
    let mut codecs = vec![JpegCodec::Rust, JpegCodec::RustDct];
    if cfg!(feature = "turbojpeg") {
        codecs.push(JpegCodec::Turbojpeg);
    }
    codecs
        .into_iter()
        .map(|codec| IngestConfig {
            jpeg_codec: Some(codec),
            ..IngestConfig::default()
        })
        .collect()
}

/// Normalise and check: 256x256, original size as displayed, top red, bottom blue (JPEG tolerance).
fn check(name: &str, bytes: &[u8], orig_format: &str) {
    for cfg in configs() {
        check_with(
            &format!("{name} ({:?})", cfg.codec()),
            bytes,
            orig_format,
            &cfg,
        );
    }
}

fn check_with(name: &str, bytes: &[u8], orig_format: &str, cfg: &IngestConfig) {
    let n = normalize_image(bytes, cfg).unwrap_or_else(|r| panic!("{name}: rejected: {r:?}"));
    assert_eq!(
        (n.orig_width, n.orig_height),
        (W, H),
        "{name}: size as displayed"
    );
    assert_eq!(n.orig_format, orig_format, "{name}");
    let out = image::load_from_memory(&n.bytes)
        .expect("decode output")
        .into_rgb8();
    assert_eq!(out.dimensions(), (256, 256));
    let close = |p: [u8; 3], want: [u8; 3]| p.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= 16);
    for (x, y, want) in [
        (200, 40, RED),
        (50, 40, RED),
        (50, 215, BLUE),
        (200, 215, BLUE),
    ] {
        let p = out.get_pixel(x, y).0;
        assert!(
            close(p, want),
            "{name}: pixel ({x},{y}) = {p:?}, want {want:?}"
        );
    }
}

#[test]
fn png_rgb8_rgb16_gray_palette() {
    let rgb = ImageBuffer::from_fn(W, H, |x, y| Rgb(top_red(x, y)));
    check(
        "png rgb8",
        &encode(DynamicImage::ImageRgb8(rgb), ImageFormat::Png),
        "png",
    );
    let rgb16 = ImageBuffer::from_fn(W, H, |x, y| Rgb(top_red(x, y).map(|c| u16::from(c) * 257)));
    check(
        "png rgb16",
        &encode(DynamicImage::ImageRgb16(rgb16), ImageFormat::Png),
        "png",
    );

    // Palette PNG, written with the png crate (image writes no indexed PNGs).
    let mut buf = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut buf, W, H);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette([RED, BLUE].concat());
        let mut w = enc.write_header().expect("header");
        let data: Vec<u8> = (0..H)
            .flat_map(|y| (0..W).map(move |_| u8::from(y >= H / 2)))
            .collect();
        w.write_image_data(&data).expect("data");
    }
    check("png palette", &buf, "png");

    // Grayscale becomes RGB with equal channels.
    let gray = ImageBuffer::from_fn(W, H, |_, y| Luma([if y < H / 2 { 230u8 } else { 20 }]));
    let n = normalize_image(
        &encode(DynamicImage::ImageLuma8(gray), ImageFormat::Png),
        &IngestConfig::default(),
    )
    .expect("gray");
    let out = image::load_from_memory(&n.bytes)
        .expect("decode")
        .into_rgb8();
    let top = out.get_pixel(128, 40).0;
    assert!(top.iter().all(|c| c.abs_diff(230) <= 4), "{top:?}");
}

#[test]
fn gif_bmp_tiff_webp() {
    let rgb = DynamicImage::ImageRgb8(ImageBuffer::from_fn(W, H, |x, y| Rgb(top_red(x, y))));
    check("bmp", &encode(rgb.clone(), ImageFormat::Bmp), "bmp");
    check("tiff", &encode(rgb.clone(), ImageFormat::Tiff), "tiff");
    check("webp", &encode(rgb.clone(), ImageFormat::WebP), "webp");
    let rgba = DynamicImage::ImageRgba8(ImageBuffer::from_fn(W, H, |x, y| {
        let [r, g, b] = top_red(x, y);
        Rgba([r, g, b, 255])
    }));
    check("gif", &encode(rgba, ImageFormat::Gif), "gif");
}

#[test]
fn jpeg_with_exif_orientation_is_turned_upright() {
    // Stored 200 wide x 300 high, red on the left; EXIF orientation 6 says "rotate 90 degrees
    // clockwise to display", which puts red on top of a 300x200 picture.
    let stored: Vec<u8> = (0..W)
        .flat_map(|_y| (0..H).flat_map(move |x| if x < H / 2 { RED } else { BLUE }))
        .collect();
    let exif =
        b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0".to_vec();
    let mut jpg = Vec::new();
    let mut enc = jpeg_encoder::Encoder::new(&mut jpg, 95);
    enc.add_app_segment(1, exif).expect("app1");
    enc.encode(&stored, H as u16, W as u16, jpeg_encoder::ColorType::Rgb)
        .expect("encode");
    check("jpeg exif-6", &jpg, "jpeg");
}

#[test]
fn cmyk_jpeg_becomes_rgb() {
    // Red = no cyan, full magenta and yellow; blue = full cyan and magenta, no yellow.
    let cmyk: Vec<u8> = (0..H)
        .flat_map(|y| {
            (0..W).flat_map(move |_| {
                if y < H / 2 {
                    [0u8, 255, 255, 0]
                } else {
                    [255, 255, 0, 0]
                }
            })
        })
        .collect();
    let mut jpg = Vec::new();
    jpeg_encoder::Encoder::new(&mut jpg, 95)
        .encode(&cmyk, W as u16, H as u16, jpeg_encoder::ColorType::Cmyk)
        .expect("encode");
    for cfg in configs() {
        let n = normalize_image(&jpg, &cfg).expect("cmyk decodes");
        let out = image::load_from_memory(&n.bytes)
            .expect("decode")
            .into_rgb8();
        let (top, bottom) = (out.get_pixel(128, 40).0, out.get_pixel(128, 215).0);
        // Pure process colours are not exactly sRGB red/blue; check the dominant channels.
        assert!(
            top[0] > 200 && top[1] < 60 && top[2] < 60,
            "{:?}: top {top:?}",
            cfg.codec()
        );
        assert!(
            bottom[2] > 200 && bottom[0] < 60 && bottom[1] < 60,
            "{:?}: bottom {bottom:?}",
            cfg.codec()
        );
    }
}

/// PSNR (dB) between two RGB images of equal size.
#[cfg(feature = "turbojpeg")]
fn psnr(a: &[f64], b: &[f64]) -> f64 {
    let mse = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse.max(1e-9)).log10()
}

/// Mean of each `block` x `block` tile of a 256x256 RGB image.
#[cfg(feature = "turbojpeg")]
fn block_means(img: &image::RgbImage, block: u32) -> Vec<f64> {
    let n = 256 / block;
    let mut out = vec![0.0; (n * n * 3) as usize];
    for (x, y, p) in img.enumerate_pixels() {
        for c in 0..3 {
            out[(((y / block) * n + x / block) * 3 + c) as usize] += f64::from(p[c as usize]);
        }
    }
    out.iter().map(|v| v / f64::from(block * block)).collect()
}

/// libjpeg-turbo's scaled decoding must give the same picture as a full decode and resize. The two
/// differ in fine detail (two-step versus one-step resampling, chroma upsampling, sub-pixel crop
/// rounding: 25.8 to 37.1 dB per pixel on the sample's photos, best at zero shift), so the pictures
/// are compared at 8x8-block scale (measured 37.8 to 52 dB), where a wrong crop, flip, rotation or
/// colour would show (well under 25 dB) and resampling does not.
#[cfg(feature = "turbojpeg")]
#[test]
fn turbojpeg_matches_the_rust_codec_on_real_photos() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sample/pairs");
    let mut photos: Vec<_> = std::fs::read_dir(&dir)
        .expect("sample")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
        .collect();
    photos.sort();
    assert!(photos.len() >= 20);
    let rust = IngestConfig {
        jpeg_codec: Some(JpegCodec::Rust),
        ..IngestConfig::default()
    };
    let turbo = IngestConfig {
        jpeg_codec: Some(JpegCodec::Turbojpeg),
        ..IngestConfig::default()
    };
    let mut worst = f64::INFINITY;
    for p in photos {
        let data = std::fs::read(&p).expect("read");
        let (a, b) = (
            normalize_image(&data, &rust).expect("rust"),
            normalize_image(&data, &turbo).expect("turbo"),
        );
        assert_eq!(
            (a.orig_width, a.orig_height),
            (b.orig_width, b.orig_height),
            "{}",
            p.display()
        );
        let (ia, ib) = (
            image::load_from_memory(&a.bytes).expect("a").into_rgb8(),
            image::load_from_memory(&b.bytes).expect("b").into_rgb8(),
        );
        let coarse = psnr(&block_means(&ia, 8), &block_means(&ib, 8));
        worst = worst.min(coarse);
        assert!(
            coarse > 36.0,
            "{}: 8x8-block PSNR {coarse:.1} dB between codecs",
            p.display()
        );
    }
    println!("worst 8x8-block PSNR between codecs: {worst:.1} dB");
}
