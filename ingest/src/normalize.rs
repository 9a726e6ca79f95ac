//! Image and caption normalisation: the part of ingest that runs in parallel.
use std::io::Cursor;

use fast_image_resize::images::Image as FirImage;
use fast_image_resize::{Filter, FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::{DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader, Limits};
use sha2::{Digest, Sha256};

use crate::config::{
    IngestConfig, InvalidUtf8, JpegCodec, JpegSubsampling, OutputImageFormat, ResizeFilter,
};

mod dct;
mod encode;
mod scaled;

/// Why an input did not become a row. The code (kebab-case) is what rejects files and the
/// manifest count by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RejectReason {
    /// The file could not be read (permissions, vanished, I/O error).
    Unreadable,
    /// A zero-byte image.
    EmptyFile,
    /// Not an image format we decode.
    UnsupportedFormat,
    /// Truncated or corrupt image data.
    CorruptImage,
    /// Declared size above `max_image_pixels` (decompression bomb).
    TooManyPixels,
    /// Archive member with an absolute path or `..`.
    UnsafePath,
    /// Image without caption.
    MissingCaption,
    /// Caption without image, or an image path that does not exist.
    MissingImage,
    EmptyCaption,
    CaptionTooLong,
    InvalidUtf8Caption,
    /// `--require-license` and the source gives none.
    NoLicense,
    /// Same normalised image and caption as a row already kept.
    Duplicate,
    /// Same source and key as a row already kept (the id would not be unique).
    DuplicateKey,
    /// A manifest row or archive that could not be parsed.
    MalformedRecord,
}

impl RejectReason {
    pub fn code(self) -> &'static str {
        match self {
            RejectReason::Unreadable => "unreadable",
            RejectReason::EmptyFile => "empty-file",
            RejectReason::UnsupportedFormat => "unsupported-format",
            RejectReason::CorruptImage => "corrupt-image",
            RejectReason::TooManyPixels => "too-many-pixels",
            RejectReason::UnsafePath => "unsafe-path",
            RejectReason::MissingCaption => "missing-caption",
            RejectReason::MissingImage => "missing-image",
            RejectReason::EmptyCaption => "empty-caption",
            RejectReason::CaptionTooLong => "caption-too-long",
            RejectReason::InvalidUtf8Caption => "invalid-utf8-caption",
            RejectReason::NoLicense => "no-license",
            RejectReason::Duplicate => "duplicate",
            RejectReason::DuplicateKey => "duplicate-key",
            RejectReason::MalformedRecord => "malformed-record",
        }
    }
}

/// A reason with a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub detail: String,
    /// A read that failed for a reason that may pass (permissions, an I/O error, a network
    /// file system timing out): not a verdict on the data. The shard holding it is not
    /// committed, so that the next run reads it again.
    pub retry: bool,
}

impl Rejection {
    pub fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
            retry: false,
        }
    }

    /// A failed read of `what`: a reject when the error is about the data (no such file, not a
    /// regular file, too large, truncated), a retry otherwise (see [`Rejection::retry`]).
    pub fn read_failed(what: &std::path::Path, e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let reason = if e.kind() == K::NotFound {
            RejectReason::MissingImage
        } else {
            RejectReason::Unreadable
        };
        Self {
            reason,
            detail: format!("{}: {e}", what.display()),
            retry: !matches!(
                e.kind(),
                K::NotFound
                    | K::InvalidInput
                    | K::InvalidData
                    | K::UnexpectedEof
                    | K::IsADirectory
                    | K::NotADirectory
                    | K::InvalidFilename
                    | K::FileTooLarge
            ) && e.raw_os_error() != Some(libc::ELOOP),
        }
    }
}

/// A normalised image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalImage {
    pub bytes: Vec<u8>,
    pub format: &'static str,
    pub width: u32,
    pub height: u32,
    pub orig_format: &'static str,
    pub orig_width: u32,
    pub orig_height: u32,
    pub sha256: String,
}

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Jpeg => "jpeg",
        ImageFormat::Png => "png",
        ImageFormat::WebP => "webp",
        ImageFormat::Gif => "gif",
        ImageFormat::Bmp => "bmp",
        ImageFormat::Tiff => "tiff",
        _ => "other",
    }
}

fn decode_error(e: ImageError) -> Rejection {
    match e {
        ImageError::Limits(l) => {
            Rejection::new(RejectReason::TooManyPixels, format!("decoder limit: {l}"))
        }
        ImageError::Unsupported(u) => {
            Rejection::new(RejectReason::UnsupportedFormat, u.to_string())
        }
        other => Rejection::new(RejectReason::CorruptImage, other.to_string()),
    }
}

/// Decode (any supported format, EXIF orientation applied), convert to 8-bit RGB (alpha composited
/// on white), resize the shorter side to `image_size`, centre-crop to a square and re-encode.
///
/// Never panics: hostile input that crashes a third-party decoder becomes a `corrupt-image`
/// rejection instead of ending the run.
pub fn normalize_image(data: &[u8], cfg: &IngestConfig) -> Result<NormalImage, Rejection> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        normalize_image_inner(data, cfg)
    }))
    .unwrap_or_else(|_| {
        Err(Rejection::new(
            RejectReason::CorruptImage,
            "the image decoder crashed on this input",
        ))
    })
}

fn normalize_image_inner(data: &[u8], cfg: &IngestConfig) -> Result<NormalImage, Rejection> {
    if data.is_empty() {
        return Err(Rejection::new(RejectReason::EmptyFile, "zero-byte image"));
    }
    let reader = ImageReader::new(Cursor::new(data))
        .with_guessed_format()
        .map_err(|e| Rejection::new(RejectReason::CorruptImage, e.to_string()))?;
    let Some(format) = reader.format() else {
        return Err(Rejection::new(
            RejectReason::UnsupportedFormat,
            "not a recognised image format (JPEG, PNG, WebP, GIF, BMP, TIFF)",
        ));
    };
    if format == ImageFormat::Jpeg && !jpeg_is_complete(data) {
        // JPEG decoders fill a cut-off image with grey rather than fail; a truncated download
        // must not become a training image.
        return Err(Rejection::new(
            RejectReason::CorruptImage,
            "JPEG is truncated (no end-of-image marker)",
        ));
    }
    let decoded = match (format, cfg.codec()) {
        #[cfg(feature = "turbojpeg")]
        (ImageFormat::Jpeg, JpegCodec::Turbojpeg) => match turbo::decode(data, cfg)? {
            Some(d) => d,
            // CMYK and anything libjpeg-turbo cannot read go through the general decoder.
            None => decode_generic(reader, cfg)?,
        },
        (ImageFormat::Jpeg, JpegCodec::RustDct) => match dct::decode(data, cfg)? {
            Some(d) => d,
            // Too small to scale, or not a JPEG this decoder handles: full size, as `rust`.
            None => decode_generic(reader, cfg)?,
        },
        (ImageFormat::Jpeg, JpegCodec::RustScaled) => match scaled::decode(data, cfg)? {
            Some(d) => d,
            // Too small to scale, or unusual (CMYK, 16-bit): full size, as the `rust` codec.
            None => decode_generic(reader, cfg)?,
        },
        _ => decode_generic(reader, cfg)?,
    };
    let side = cfg.image_size;
    let content = decoded.content.unwrap_or([
        0.0,
        0.0,
        f64::from(decoded.width),
        f64::from(decoded.height),
    ]);
    let pixels = resize_center_crop(
        decoded.rgb,
        (decoded.width, decoded.height),
        content,
        side,
        cfg.resize_filter,
    )?;
    let bytes = encode(pixels, decoded.ycbcr, side, cfg)?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(NormalImage {
        bytes,
        format: match cfg.image_format {
            OutputImageFormat::Jpeg => "jpeg",
            OutputImageFormat::Png => "png",
        },
        width: side,
        height: side,
        orig_format: format_name(format),
        orig_width: decoded.orig_width,
        orig_height: decoded.orig_height,
        sha256,
    })
}

/// Decoded pixels (8-bit RGB, upright), possibly already reduced, and the original size as
/// displayed.
struct Decoded {
    /// 3 bytes a pixel: RGB, or YCbCr (JFIF, full range) when `ycbcr`.
    rgb: Vec<u8>,
    /// The pixels are still YCbCr, as a JPEG stores them: resized as they are, and written to
    /// a JPEG without a conversion there and back.
    ycbcr: bool,
    width: u32,
    height: u32,
    orig_width: u32,
    orig_height: u32,
    /// Where the picture lies in the decoded pixels (left, top, width, height) when that is not
    /// the whole `width` x `height`: a DCT-scaled decode rounds a partial edge block up to a
    /// whole pixel, and cropping by the rounded size would shift the picture by part of a pixel.
    content: Option<[f64; 4]>,
}

fn check_pixels(w: u32, h: u32, cfg: &IngestConfig) -> Result<(), Rejection> {
    let n = u64::from(w) * u64::from(h);
    if n > cfg.max_image_pixels {
        return Err(Rejection::new(
            RejectReason::TooManyPixels,
            format!(
                "declared {w}x{h} = {n} pixels > limit {}",
                cfg.max_image_pixels
            ),
        ));
    }
    if n == 0 {
        return Err(Rejection::new(
            RejectReason::CorruptImage,
            format!("declared size {w}x{h}"),
        ));
    }
    Ok(())
}

/// Any supported format through the `image` crate, with the pixel limit checked on the declared
/// size before anything is decoded.
fn decode_generic(
    mut reader: ImageReader<Cursor<&[u8]>>,
    cfg: &IngestConfig,
) -> Result<Decoded, Rejection> {
    let mut limits = Limits::default();
    // Bytes for the largest allowed image at 16-bit RGBA, plus decoder slack.
    limits.max_alloc = Some(
        cfg.max_image_pixels
            .saturating_mul(8)
            .saturating_add(64 << 20),
    );
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (w, h) = decoder.dimensions();
    check_pixels(w, h, cfg)?;
    // A broken EXIF block should not lose an otherwise good image: fall back to no rotation.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    img.apply_orientation(orientation);
    let (width, height) = (img.width(), img.height());
    Ok(Decoded {
        rgb: to_rgb_on_white(img),
        ycbcr: false,
        width,
        height,
        orig_width: width,
        orig_height: height,
        content: None,
    })
}

#[cfg(feature = "turbojpeg")]
mod turbo {
    use std::cell::RefCell;
    use std::io::Cursor;

    use image::{DynamicImage, ImageDecoder, RgbImage};
    use turbojpeg::{
        Colorspace, Compressor, Decompressor, Image, PixelFormat, ScalingFactor, Subsamp,
    };

    use super::{Decoded, RejectReason, Rejection, check_pixels};
    use crate::config::{IngestConfig, JpegSubsampling};

    thread_local! {
        static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
        static COMPRESSOR: RefCell<Option<(Compressor, u8, JpegSubsampling)>> = const { RefCell::new(None) };
    }

    fn internal(e: turbojpeg::Error) -> Rejection {
        Rejection::new(RejectReason::CorruptImage, format!("libjpeg-turbo: {e}"))
    }

    /// The smallest DCT scaling (n/8) whose shorter side is still at least `side`.
    pub(super) fn scaling_for(short: usize, side: usize) -> ScalingFactor {
        Decompressor::supported_scaling_factors()
            .into_iter()
            .filter(|f| f.num() <= f.denom() && f.scale(short) >= side)
            .min_by(|a, b| (a.num() * b.denom()).cmp(&(b.num() * a.denom())))
            .unwrap_or(ScalingFactor::ONE)
    }

    /// Decode a JPEG scaled in the DCT; `None` when libjpeg-turbo cannot (CMYK, odd headers) and
    /// the general decoder should try.
    pub(super) fn decode(data: &[u8], cfg: &IngestConfig) -> Result<Option<Decoded>, Rejection> {
        DECOMPRESSOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                *slot = Some(Decompressor::new().map_err(internal)?);
            }
            let Some(d) = slot.as_mut() else {
                return Ok(None);
            };
            let Ok(header) = d.read_header(data) else {
                return Ok(None);
            };
            if !matches!(
                header.colorspace,
                Colorspace::YCbCr | Colorspace::Gray | Colorspace::RGB
            ) {
                return Ok(None);
            }
            let (w, h) = (header.width as u32, header.height as u32);
            check_pixels(w, h, cfg)?;
            let factor = scaling_for(header.width.min(header.height), cfg.image_size as usize);
            d.set_scaling_factor(factor).map_err(internal)?;
            let s = header.scaled(factor);
            let mut pixels = vec![0u8; 3 * s.width * s.height];
            let image = Image {
                pixels: pixels.as_mut_slice(),
                width: s.width,
                pitch: 3 * s.width,
                height: s.height,
                format: PixelFormat::RGB,
            };
            d.decompress(data, image).map_err(internal)?;
            // libjpeg-turbo ignores EXIF; read the orientation from the header with `image`.
            let orientation = image::codecs::jpeg::JpegDecoder::new(Cursor::new(data))
                .and_then(|mut dec| dec.orientation())
                .unwrap_or(image::metadata::Orientation::NoTransforms);
            let buf =
                RgbImage::from_raw(s.width as u32, s.height as u32, pixels).ok_or_else(|| {
                    Rejection::new(
                        RejectReason::CorruptImage,
                        "decoded buffer has the wrong size",
                    )
                })?;
            let mut img = DynamicImage::ImageRgb8(buf);
            img.apply_orientation(orientation);
            let swapped = img.width() != s.width as u32;
            let (orig_width, orig_height) = if swapped { (h, w) } else { (w, h) };
            let (width, height) = (img.width(), img.height());
            Ok(Some(Decoded {
                rgb: img.into_rgb8().into_raw(),
                ycbcr: false,
                width,
                height,
                orig_width,
                orig_height,
                content: None,
            }))
        })
    }

    pub(super) fn encode(
        pixels: &[u8],
        side: u32,
        quality: u8,
        subsampling: JpegSubsampling,
    ) -> Result<Vec<u8>, String> {
        COMPRESSOR.with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot
                .as_ref()
                .is_none_or(|(_, q, s)| (*q, *s) != (quality, subsampling))
            {
                let mut c = Compressor::new().map_err(|e| e.to_string())?;
                c.set_quality(i32::from(quality))
                    .map_err(|e| e.to_string())?;
                c.set_subsamp(match subsampling {
                    JpegSubsampling::S420 => Subsamp::Sub2x2,
                    JpegSubsampling::S444 => Subsamp::None,
                })
                .map_err(|e| e.to_string())?;
                *slot = Some((c, quality, subsampling));
            }
            let Some((c, _, _)) = slot.as_mut() else {
                return Err("no compressor".to_string());
            };
            let side = side as usize;
            c.compress_to_vec(Image {
                pixels,
                width: side,
                pitch: 3 * side,
                height: side,
                format: PixelFormat::RGB,
            })
            .map_err(|e| e.to_string())
        })
    }
}

/// Does a JPEG reach its end-of-image marker? Walks the marker segments (so that an EXIF thumbnail's
/// own markers are skipped) to the first scan, then looks for EOI after it. Entropy-coded data never
/// contains 0xFFD9 (0xFF is byte-stuffed), so finding it there means the image is complete.
pub fn jpeg_is_complete(data: &[u8]) -> bool {
    let mut i = 2;
    while i + 4 <= data.len() {
        if data[i] != 0xFF {
            return false;
        }
        let marker = data[i + 1];
        match marker {
            0xFF => i += 1,
            0xD9 => return true,
            0x01 | 0xD0..=0xD7 => i += 2,
            _ => {
                let len = usize::from(u16::from_be_bytes([data[i + 2], data[i + 3]]));
                let next = i + 2 + len;
                if marker == 0xDA {
                    return next <= data.len()
                        && data[next..].windows(2).rev().any(|w| w == [0xFF, 0xD9]);
                }
                i = next;
            }
        }
    }
    false
}

/// 8-bit RGB; transparent pixels are composited on white (what a viewer shows, and what keeps
/// transparent logos from turning into black squares).
fn to_rgb_on_white(img: DynamicImage) -> Vec<u8> {
    match img {
        // Already 8-bit RGB (most JPEGs): the buffer itself, not a converted copy.
        DynamicImage::ImageRgb8(rgb) => return rgb.into_raw(),
        // Grey: each value three times (the `image` crate's conversion goes through f32 colour
        // management, 2% of an ingest when some of the photos are grey).
        DynamicImage::ImageLuma8(grey) => {
            return grey.into_raw().into_iter().flat_map(|v| [v; 3]).collect();
        }
        _ => {}
    }
    if !img.color().has_alpha() {
        return img.into_rgb8().into_raw();
    }
    let rgba = img.into_rgba8();
    let mut out = Vec::with_capacity(rgba.width() as usize * rgba.height() as usize * 3);
    for p in rgba.pixels() {
        let a = u32::from(p[3]);
        for c in &p.0[..3] {
            // Rounded (c*a + 255*(255-a)) / 255.
            out.push(((u32::from(*c) * a + 255 * (255 - a) + 127) / 255) as u8);
        }
    }
    out
}

/// Resize the centred square of the picture (`content`: left, top, width, height in pixels of
/// the `size` buffer; the whole buffer, or a little less after a DCT-scaled decode) to `side` x
/// `side`.
fn resize_center_crop(
    rgb: Vec<u8>,
    size: (u32, u32),
    content: [f64; 4],
    side: u32,
    filter: ResizeFilter,
) -> Result<Vec<u8>, Rejection> {
    let internal = |e: String| Rejection::new(RejectReason::CorruptImage, format!("resize: {e}"));
    let src = FirImage::from_vec_u8(size.0, size.1, rgb, PixelType::U8x3)
        .map_err(|e| internal(e.to_string()))?;
    let mut dst = FirImage::new(side, side, PixelType::U8x3);
    let [x0, y0, w, h] = content;
    let short = w.min(h);
    let (left, top) = (x0 + (w - short) / 2.0, y0 + (h - short) / 2.0);
    let alg = ResizeAlg::Convolution(match filter {
        ResizeFilter::Box => FilterType::Box,
        ResizeFilter::Bilinear => FilterType::Bilinear,
        ResizeFilter::CatmullRom => FilterType::CatmullRom,
        ResizeFilter::Lanczos3 => FilterType::Custom(
            Filter::new("Lanczos3", lanczos3_tabled, 3.0).map_err(|e| internal(e.to_string()))?,
        ),
    });
    // Resizing the centred square crop straight to side x side is the same as resizing the shorter
    // side and then cropping, without the intermediate image.
    let opts = ResizeOptions::new()
        .resize_alg(alg)
        .crop(left, top, short, short);
    Resizer::new()
        .resize(&src, &mut dst, &opts)
        .map_err(|e| internal(e.to_string()))?;
    Ok(dst.into_vec())
}

/// The Lanczos3 kernel, sinc(x) sinc(x / 3) on (-3, 3).
fn lanczos3(x: f64) -> f64 {
    let sinc = |x: f64| {
        if x == 0.0 {
            1.0
        } else {
            (x * std::f64::consts::PI).sin() / (x * std::f64::consts::PI)
        }
    };
    if x.abs() < 3.0 {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Samples of `lanczos3` a unit.
const LANCZOS_STEPS: usize = 4096;

/// Lanczos3 read from a table of the kernel (linear between 4,096 samples a unit; within 1e-7
/// of it, see the tests). The resize computes its coefficients again for every image, and two
/// `sin` a tap were 3% of an ingest.
fn lanczos3_tabled(x: f64) -> f64 {
    static TABLE: std::sync::LazyLock<Vec<f64>> = std::sync::LazyLock::new(|| {
        (0..=3 * LANCZOS_STEPS + 1)
            .map(|i| lanczos3(i as f64 / LANCZOS_STEPS as f64))
            .collect()
    });
    let t = x.abs() * LANCZOS_STEPS as f64;
    // NaN too.
    if t.is_nan() || t >= (3 * LANCZOS_STEPS) as f64 {
        return 0.0;
    }
    let i = t as usize;
    let (a, b) = (TABLE[i], TABLE[i + 1]);
    a + (b - a) * (t - i as f64)
}

/// JFIF YCbCr (full range, BT.601) to RGB, in place, 3 bytes a pixel.
fn ycbcr_to_rgb(pixels: &mut [u8]) {
    for px in pixels.chunks_exact_mut(3) {
        let y = f32::from(px[0]) + 0.5;
        let cb = f32::from(px[1]) - 128.0;
        let cr = f32::from(px[2]) - 128.0;
        px[0] = (y + 1.402 * cr).clamp(0.0, 255.0) as u8;
        px[1] = (y - 0.344_136 * cb - 0.714_136 * cr).clamp(0.0, 255.0) as u8;
        px[2] = (y + 1.772 * cb).clamp(0.0, 255.0) as u8;
    }
}

fn encode(
    mut pixels: Vec<u8>,
    ycbcr: bool,
    side: u32,
    cfg: &IngestConfig,
) -> Result<Vec<u8>, Rejection> {
    let err = |e: String| Rejection::new(RejectReason::CorruptImage, format!("encode: {e}"));
    let mut out = Vec::with_capacity(64 << 10);
    let jpeg_encoder_takes_ycbcr =
        cfg.image_format == OutputImageFormat::Jpeg && cfg.codec() != JpegCodec::Turbojpeg;
    if ycbcr && !jpeg_encoder_takes_ycbcr {
        ycbcr_to_rgb(&mut pixels);
    }
    let pixels = &pixels[..];
    match cfg.image_format {
        #[cfg(feature = "turbojpeg")]
        OutputImageFormat::Jpeg if cfg.codec() == JpegCodec::Turbojpeg => {
            out = turbo::encode(pixels, side, cfg.jpeg_quality, cfg.subsampling()).map_err(err)?;
        }
        OutputImageFormat::Jpeg => {
            let s = u16::try_from(side).map_err(|e| err(e.to_string()))?;
            let subsampled = cfg.subsampling() == JpegSubsampling::S420;
            if ycbcr {
                // cm3's own encoder: jpeg-encoder's bytes, in a third of the time.
                out = encode::encode_ycbcr(pixels, s, cfg.jpeg_quality, subsampled).map_err(err)?;
            } else {
                encode::jpeg_encoder_into(&mut out, cfg.jpeg_quality, subsampled)
                    .encode(pixels, s, s, jpeg_encoder::ColorType::Rgb)
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        OutputImageFormat::Png => {
            use image::ImageEncoder;
            image::codecs::png::PngEncoder::new(&mut out)
                .write_image(pixels, side, side, image::ExtendedColorType::Rgb8)
                .map_err(|e| err(e.to_string()))?;
        }
    }
    Ok(out)
}

/// A normalised caption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalCaption {
    pub text: String,
    pub repaired: bool,
}

/// UTF-8 check (repair or reject), whitespace collapsed to single spaces and trimmed, empty and
/// over-long captions rejected.
pub fn normalize_caption(raw: &[u8], cfg: &IngestConfig) -> Result<NormalCaption, Rejection> {
    let (text, repaired) = match std::str::from_utf8(raw) {
        Ok(s) => (std::borrow::Cow::Borrowed(s), false),
        Err(e) => match cfg.invalid_utf8 {
            InvalidUtf8::Reject => {
                return Err(Rejection::new(
                    RejectReason::InvalidUtf8Caption,
                    format!("caption is not UTF-8: {e}"),
                ));
            }
            InvalidUtf8::Repair => (String::from_utf8_lossy(raw), true),
        },
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        // Control characters other than whitespace carry no meaning in a caption; a word made only
        // of them disappears with its separator.
        let mut chars = word.chars().filter(|c| !c.is_control()).peekable();
        if chars.peek().is_none() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(chars);
    }
    if out.is_empty() {
        return Err(Rejection::new(
            RejectReason::EmptyCaption,
            "caption is empty after whitespace normalisation",
        ));
    }
    let n = out.chars().count();
    if n > cfg.max_caption_chars {
        return Err(Rejection::new(
            RejectReason::CaptionTooLong,
            format!(
                "{n} characters > max_caption_chars {}",
                cfg.max_caption_chars
            ),
        ));
    }
    Ok(NormalCaption {
        text: out,
        repaired,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_reads_are_retried_only_when_they_may_pass() {
        use std::io::{Error, ErrorKind as K};
        let p = std::path::Path::new("x.jpg");
        for kind in [K::PermissionDenied, K::Interrupted, K::TimedOut, K::Other] {
            let r = Rejection::read_failed(p, &Error::from(kind));
            assert!(r.retry, "{kind:?}");
        }
        for kind in [
            K::NotFound,
            K::InvalidInput,
            K::InvalidData,
            K::IsADirectory,
        ] {
            let r = Rejection::read_failed(p, &Error::from(kind));
            assert!(!r.retry, "{kind:?}");
        }
        assert_eq!(
            Rejection::read_failed(p, &Error::from(K::NotFound)).reason,
            RejectReason::MissingImage
        );
        assert!(!Rejection::new(RejectReason::Unreadable, "x").retry);
    }
    use image::{ImageBuffer, Rgb, Rgba};

    fn png(img: DynamicImage) -> Vec<u8> {
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .expect("encode png");
        out
    }

    fn decode(bytes: &[u8]) -> image::RgbImage {
        image::load_from_memory(bytes).expect("decode").into_rgb8()
    }

    #[test]
    fn caption_whitespace_and_limits() {
        let cfg = IngestConfig::default();
        let c = normalize_caption(b"  a\tcat\n\non  a\xc2\xa0mat \r\n", &cfg).expect("ok");
        assert_eq!(c.text, "a cat on a mat");
        assert!(!c.repaired);
        assert_eq!(
            normalize_caption(b" \n\t ", &cfg).map_err(|r| r.reason),
            Err(RejectReason::EmptyCaption)
        );
        let long = vec![b'x'; cfg.max_caption_chars + 1];
        assert_eq!(
            normalize_caption(&long, &cfg).map_err(|r| r.reason),
            Err(RejectReason::CaptionTooLong)
        );
    }

    #[test]
    fn invalid_utf8_repair_or_reject() {
        let mut cfg = IngestConfig::default();
        let c = normalize_caption(b"caf\xe9 au lait", &cfg).expect("repaired");
        assert_eq!(c.text, "caf\u{fffd} au lait");
        assert!(c.repaired);
        cfg.invalid_utf8 = InvalidUtf8::Reject;
        assert_eq!(
            normalize_caption(b"caf\xe9", &cfg).map_err(|r| r.reason),
            Err(RejectReason::InvalidUtf8Caption)
        );
    }

    #[test]
    fn resize_is_shorter_side_then_centre_crop() {
        // 300x100: left third red, middle green, right third blue. The centre crop keeps green.
        let img = ImageBuffer::from_fn(300, 100, |x, _| match x / 100 {
            0 => Rgb([255u8, 0, 0]),
            1 => Rgb([0, 255, 0]),
            _ => Rgb([0, 0, 255]),
        });
        let cfg = IngestConfig {
            image_format: OutputImageFormat::Png,
            ..IngestConfig::default()
        };
        let n = normalize_image(&png(DynamicImage::ImageRgb8(img)), &cfg).expect("ok");
        assert_eq!(
            (n.width, n.height, n.orig_width, n.orig_height),
            (256, 256, 300, 100)
        );
        let out = decode(&n.bytes);
        assert_eq!(out.dimensions(), (256, 256));
        assert_eq!(out.get_pixel(128, 128).0, [0, 255, 0]);
        assert_eq!(out.get_pixel(128, 10).0, [0, 255, 0]);
        assert_eq!(n.sha256, hex::encode(Sha256::digest(&n.bytes)));
    }

    #[test]
    fn alpha_is_composited_on_white() {
        let img = ImageBuffer::from_fn(64, 64, |x, _| {
            if x < 32 {
                Rgba([0u8, 0, 0, 0])
            } else {
                Rgba([0, 0, 0, 255])
            }
        });
        let cfg = IngestConfig {
            image_format: OutputImageFormat::Png,
            image_size: 64,
            ..IngestConfig::default()
        };
        let out = decode(
            &normalize_image(&png(DynamicImage::ImageRgba8(img)), &cfg)
                .expect("ok")
                .bytes,
        );
        assert_eq!(out.get_pixel(5, 5).0, [255, 255, 255]);
        assert_eq!(out.get_pixel(60, 5).0, [0, 0, 0]);
    }

    #[cfg(feature = "turbojpeg")]
    #[test]
    fn dct_scaling_stops_just_above_the_output_size() {
        let pick = |short: usize| {
            let f = turbo::scaling_for(short, 256);
            (f.num() * 8 / f.denom(), f.scale(short))
        };
        // 426 * 5/8 = 267 >= 256, while 4/8 would give 213.
        assert_eq!(pick(426), (5, 267));
        assert_eq!(pick(1200), (2, 300));
        assert_eq!(pick(4000), (1, 500));
        // Smaller than the output: decoded at full size, then enlarged.
        assert_eq!(pick(200), (8, 200));
        assert_eq!(pick(256), (8, 256));
    }

    #[test]
    fn truncated_jpeg_is_rejected() {
        let cfg = IngestConfig::default();
        let img = ImageBuffer::from_fn(64, 48, |x, y| Rgb([x as u8 * 4, y as u8 * 5, 90u8]));
        let mut jpg = Vec::new();
        DynamicImage::ImageRgb8(img)
            .write_to(&mut Cursor::new(&mut jpg), ImageFormat::Jpeg)
            .expect("encode");
        assert!(jpeg_is_complete(&jpg));
        assert!(normalize_image(&jpg, &cfg).is_ok());
        // Trailing bytes after the end marker are common and harmless.
        let mut trailing = jpg.clone();
        trailing.extend_from_slice(b"trailing junk");
        assert!(normalize_image(&trailing, &cfg).is_ok());
        for cut in [jpg.len() - 2, jpg.len() / 2, 200] {
            assert!(!jpeg_is_complete(&jpg[..cut]), "cut at {cut}");
            assert_eq!(
                normalize_image(&jpg[..cut], &cfg).map_err(|r| r.reason),
                Err(RejectReason::CorruptImage)
            );
        }
    }

    #[test]
    fn bombs_and_garbage_are_rejected() {
        let cfg = IngestConfig {
            max_image_pixels: 100 * 100,
            ..IngestConfig::default()
        };
        let big = png(DynamicImage::new_rgb8(200, 200));
        assert_eq!(
            normalize_image(&big, &cfg).map_err(|r| r.reason),
            Err(RejectReason::TooManyPixels)
        );
        assert_eq!(
            normalize_image(&[], &cfg).map_err(|r| r.reason),
            Err(RejectReason::EmptyFile)
        );
        assert_eq!(
            normalize_image(b"hello, not an image", &cfg).map_err(|r| r.reason),
            Err(RejectReason::UnsupportedFormat)
        );
        let small = png(DynamicImage::new_rgb8(50, 50));
        assert_eq!(
            normalize_image(&small[..small.len() / 2], &cfg).map_err(|r| r.reason),
            Err(RejectReason::CorruptImage)
        );
    }

    #[test]
    fn dct_scale_keeps_the_shorter_side_at_one_and_a_half_times_the_output() {
        let pick = |short: u32, side: u32| {
            let n = scaled::dct_scale_for(short, side);
            (n, (short * n).div_ceil(8))
        };
        // 256 needs a scaled shorter side of 384 or more.
        assert_eq!(pick(200, 256), (8, 200));
        assert_eq!(pick(767, 256), (8, 767));
        assert_eq!(pick(768, 256), (4, 384));
        assert_eq!(pick(1535, 256), (4, 768));
        assert_eq!(pick(1536, 256), (2, 384));
        assert_eq!(pick(3071, 256), (2, 768));
        assert_eq!(pick(3072, 256), (1, 384));
        assert_eq!(pick(12000, 256), (1, 1500));
        // Odd sizes round up, as the decoder does.
        assert_eq!(pick(769, 256), (4, 385));
        assert_eq!(pick(383, 128), (8, 383));
        assert_eq!(pick(384, 128), (4, 192));
        // `rust-dct` scales by the same rule; full size is not its job.
        for short in [200, 767, 768, 1535, 1536, 3071, 3072, 12000, 769] {
            let n = scaled::dct_scale_for(short, 256);
            assert_eq!(
                dct::dct_scale_for(short, 256),
                (n < 8).then_some(n),
                "{short}"
            );
        }
        assert_eq!(dct::dct_scale_for(383, 128), None);
        assert_eq!(dct::dct_scale_for(384, 128), Some(4));
    }

    /// Normalised to PNG with `codec`, decoded back: the pipeline's pixels without JPEG re-encoding.
    fn pixels_with(data: &[u8], codec: JpegCodec, image_size: u32) -> (NormalImage, Vec<u8>) {
        let cfg = IngestConfig {
            jpeg_codec: Some(codec),
            image_format: OutputImageFormat::Png,
            image_size,
            ..IngestConfig::default()
        };
        let n = normalize_image(data, &cfg).expect("normalises");
        let px = decode(&n.bytes).into_raw();
        (n, px)
    }

    fn psnr(a: &[u8], b: &[u8]) -> f64 {
        assert_eq!(a.len(), b.len());
        let se: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
            .sum();
        10.0 * (255.0f64.powi(2) / (se / a.len() as f64).max(1e-9)).log10()
    }

    fn sample_photos() -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sample/pairs");
        let mut photos: Vec<_> = std::fs::read_dir(&dir)
            .expect("sample")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        photos.sort();
        assert!(photos.len() >= 20, "{}", dir.display());
        photos
            .into_iter()
            .map(|p| {
                let data = std::fs::read(&p).expect("read");
                (p, data)
            })
            .collect()
    }

    /// The two scaled decoders' own decode: `Some` when they decode the image themselves
    /// (scaled; `rust-dct` also at full size), `None` when they leave it to the general decoder.
    fn scaled_decode(codec: JpegCodec, data: &[u8], cfg: &IngestConfig) -> Option<Decoded> {
        match codec {
            JpegCodec::RustScaled => scaled::decode(data, cfg),
            JpegCodec::RustDct => dct::decode(data, cfg),
            other => panic!("{other:?} is not a scaled codec"),
        }
        .expect("no error")
    }

    const SCALED_CODECS: [JpegCodec; 2] = [JpegCodec::RustScaled, JpegCodec::RustDct];

    /// `rust-scaled` and `rust-dct` against the full decode (`rust`) on real photos: the
    /// sample's JPEGs at a 128 output (shorter sides 375 to 621: decoded at 1/2 from 384 up),
    /// and the same photos enlarged 2x and re-encoded for a 256 output (1/2 from 768 up). Every
    /// image >= 40 dB. `rust-scaled` leaves the others to the general decoder (the `rust`
    /// codec's bytes); `rust-dct` decodes them at full size itself, also >= 40 dB.
    #[test]
    fn scaled_decode_matches_the_full_decode_on_real_photos() {
        let cfg = |image_size| IngestConfig {
            image_size,
            ..IngestConfig::default()
        };
        for codec in SCALED_CODECS {
            // [scaled, full size]
            let (mut worst, mut count) = ([f64::INFINITY; 2], [0; 2]);
            for (path, data) in sample_photos() {
                let img = image::load_from_memory(&data).expect("decode").into_rgb8();
                let (w, h) = img.dimensions();
                let mut big = Vec::new();
                DynamicImage::ImageRgb8(image::imageops::resize(
                    &img,
                    2 * w,
                    2 * h,
                    image::imageops::FilterType::Lanczos3,
                ))
                .write_to(&mut Cursor::new(&mut big), ImageFormat::Jpeg)
                .expect("encode");
                for (bytes, side, short) in [(&data, 128, w.min(h)), (&big, 256, 2 * w.min(h))] {
                    let scaled = scaled_decode(codec, bytes, &cfg(side));
                    let (a, pa) = pixels_with(bytes, JpegCodec::Rust, side);
                    let (b, pb) = pixels_with(bytes, codec, side);
                    assert_eq!((a.orig_width, a.orig_height), (b.orig_width, b.orig_height));
                    let full_size = short < 3 * side;
                    if scaled.is_none() {
                        // Left to the general decoder: the `rust` codec's exact bytes.
                        assert!(full_size, "{codec:?} {}", path.display());
                        assert_eq!(codec, JpegCodec::RustScaled, "{}", path.display());
                        assert_eq!(a.bytes, b.bytes, "{codec:?} {}", path.display());
                        continue;
                    }
                    count[usize::from(full_size)] += 1;
                    let p = psnr(&pa, &pb);
                    worst[usize::from(full_size)] = worst[usize::from(full_size)].min(p);
                    assert!(
                        p >= 40.0,
                        "{codec:?} {} at {side}: {p:.2} dB",
                        path.display()
                    );
                }
            }
            // 23 of the 27 photos each time are scaled (4 have a shorter side under 384 px, 768
            // enlarged); `rust-dct` decodes those 4 twice at full size.
            let full_size = if codec == JpegCodec::RustDct { 8 } else { 0 };
            assert_eq!(count, [46, full_size], "{codec:?}");
            println!(
                "{codec:?}: {count:?} scaled and full-size decodes, worst PSNR {worst:.2?} dB"
            );
        }
    }

    /// A detailed photo at odd sizes (so the scaled decode pads the right and bottom edges) with
    /// each EXIF orientation: upright and aligned like the full decode.
    #[test]
    fn scaled_decode_applies_every_exif_orientation() {
        let stored = detailed_photo();
        for orientation in 1u8..=8 {
            let mut exif = b"Exif\0\0MM\0\x2a\0\0\0\x08\0\x01\x01\x12\0\x03\0\0\0\x01\0".to_vec();
            exif.extend_from_slice(&[orientation, 0, 0, 0, 0, 0, 0]);
            let jpg = jpeg_of(&stored, |enc| {
                enc.set_quality(95);
                enc.add_app_segment(1, exif).expect("app1");
            });
            let cfg = IngestConfig::default();
            let (a, pa) = pixels_with(&jpg, JpegCodec::Rust, 256);
            let upright = if orientation >= 5 {
                (811, 1203)
            } else {
                (1203, 811)
            };
            assert_eq!((a.orig_width, a.orig_height), upright, "{orientation}");
            for codec in SCALED_CODECS {
                assert!(scaled_decode(codec, &jpg, &cfg).is_some());
                let (b, pb) = pixels_with(&jpg, codec, 256);
                assert_eq!((b.orig_width, b.orig_height), upright, "{orientation}");
                let p = psnr(&pa, &pb);
                assert!(p >= 40.0, "{codec:?} orientation {orientation}: {p:.2} dB");
            }
        }
    }

    /// The tabled Lanczos3 kernel is within 1e-7 of the exact one everywhere (a fine grid over
    /// its support and past it), and exactly 0 outside.
    #[test]
    fn tabled_lanczos3_is_the_kernel() {
        let mut worst = 0f64;
        for i in -40_000..=40_000 {
            let x = f64::from(i) * 3.2e-4 + 1e-6;
            worst = worst.max((lanczos3_tabled(x) - lanczos3(x)).abs());
        }
        assert!(worst < 1e-7, "{worst:e}");
        assert_eq!(lanczos3_tabled(0.0), 1.0);
        for x in [3.0, -3.0, 7.5, f64::INFINITY, f64::NAN] {
            assert_eq!(lanczos3_tabled(x), 0.0, "{x}");
        }
    }

    #[test]
    fn grey_and_rgb_become_what_the_image_crate_converts_them_to() {
        // Every grey level, and a grey photo, against `image`'s own conversion.
        let levels = image::GrayImage::from_fn(256, 3, |x, y| image::Luma([(x as u8) ^ (y as u8)]));
        let (_, data) = sample_photos().swap_remove(1);
        let photo = image::load_from_memory(&data).expect("decode");
        for img in [
            DynamicImage::ImageLuma8(levels),
            DynamicImage::ImageLuma8(photo.to_luma8()),
            DynamicImage::ImageRgb8(photo.to_rgb8()),
        ] {
            let expected = img.to_rgb8().into_raw();
            assert_eq!(to_rgb_on_white(img), expected);
        }
    }

    #[test]
    fn scaled_decode_of_grayscale_and_fallback_for_cmyk() {
        let (_, data) = sample_photos().swap_remove(1);
        let photo = image::load_from_memory(&data).expect("decode").into_luma8();
        let gray =
            image::imageops::resize(&photo, 1000, 800, image::imageops::FilterType::Lanczos3);
        let mut jpg = Vec::new();
        DynamicImage::ImageLuma8(gray)
            .write_to(&mut Cursor::new(&mut jpg), ImageFormat::Jpeg)
            .expect("encode");
        let cfg = IngestConfig::default();
        let (_, pa) = pixels_with(&jpg, JpegCodec::Rust, 256);
        for codec in SCALED_CODECS {
            assert!(scaled_decode(codec, &jpg, &cfg).is_some());
            let (_, pb) = pixels_with(&jpg, codec, 256);
            assert!(
                pb.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]),
                "{codec:?} still grey"
            );
            let p = psnr(&pa, &pb);
            assert!(p >= 40.0, "{codec:?} grayscale: {p:.2} dB");
        }
        // `rust-dct` at full size (a 512 output), also grey.
        let cfg512 = IngestConfig {
            image_size: 512,
            ..IngestConfig::default()
        };
        assert!(scaled_decode(JpegCodec::RustDct, &jpg, &cfg512).is_some());
        let (_, pa) = pixels_with(&jpg, JpegCodec::Rust, 512);
        let (_, pb) = pixels_with(&jpg, JpegCodec::RustDct, 512);
        assert!(pb.chunks(3).all(|p| p[0] == p[1] && p[1] == p[2]));
        let p = psnr(&pa, &pb);
        assert!(p >= 40.0, "rust-dct grayscale at full size: {p:.2} dB");

        // CMYK: not scaled, decoded (and converted) by the general decoder, same bytes as `rust`.
        let cmyk: Vec<u8> = (0..800 * 1000)
            .flat_map(|i| [(i % 251) as u8, 40, 200, 10])
            .collect();
        let mut jpg = Vec::new();
        jpeg_encoder::Encoder::new(&mut jpg, 90)
            .encode(&cmyk, 1000, 800, jpeg_encoder::ColorType::Cmyk)
            .expect("encode");
        for codec in SCALED_CODECS {
            assert!(scaled_decode(codec, &jpg, &cfg).is_none());
            assert_eq!(
                pixels_with(&jpg, JpegCodec::Rust, 256).0,
                pixels_with(&jpg, codec, 256).0
            );
        }
    }

    #[test]
    fn scaled_decode_checks_the_declared_size_first() {
        let cfg = IngestConfig {
            max_image_pixels: 1000 * 800 - 1,
            ..IngestConfig::default()
        };
        let mut jpg = Vec::new();
        DynamicImage::new_rgb8(1000, 800)
            .write_to(&mut Cursor::new(&mut jpg), ImageFormat::Jpeg)
            .expect("encode");
        assert_eq!(
            scaled::decode(&jpg, &cfg).map(|_| ()).map_err(|r| r.reason),
            Err(RejectReason::TooManyPixels)
        );
        assert_eq!(
            dct::decode(&jpg, &cfg).map(|_| ()).map_err(|r| r.reason),
            Err(RejectReason::TooManyPixels)
        );
    }

    /// A detailed photo at odd sizes (1203 x 811: partial MCUs on both edges).
    fn detailed_photo() -> image::RgbImage {
        let (_, data) = sample_photos().swap_remove(0);
        let photo = image::load_from_memory(&data).expect("decode").into_rgb8();
        image::imageops::resize(&photo, 1203, 811, image::imageops::FilterType::Lanczos3)
    }

    /// `photo` as a JPEG (quality 90 unless `encode` says otherwise).
    fn jpeg_of(
        photo: &image::RgbImage,
        encode: impl FnOnce(&mut jpeg_encoder::Encoder<&mut Vec<u8>>),
    ) -> Vec<u8> {
        let mut jpg = Vec::new();
        let mut enc = jpeg_encoder::Encoder::new(&mut jpg, 90);
        encode(&mut enc);
        let (w, h) = photo.dimensions();
        enc.encode(
            photo.as_raw(),
            w as u16,
            h as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .expect("encode");
        jpg
    }

    /// The tests' random numbers (xorshift64).
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    /// `rust-dct` decodes every chroma sampling it accepts, with and without restart intervals,
    /// at each scale (1/2, 1/4, 1/8: outputs 256, 128, 64 of an 811-pixel shorter side), to
    /// within 40 dB of the full decode.
    #[test]
    fn dct_decoder_handles_each_sampling_scale_and_restart_interval() {
        use jpeg_encoder::SamplingFactor as F;
        let photo = detailed_photo();
        let mut worst = f64::INFINITY;
        for sampling in [F::F_1_1, F::F_2_1, F::F_1_2, F::F_2_2] {
            for restart in [0u16, 1, 7] {
                let jpg = jpeg_of(&photo, |enc| {
                    enc.set_sampling_factor(sampling);
                    enc.set_restart_interval(restart);
                });
                if restart > 0 {
                    assert!(jpg.windows(2).any(|w| w == [0xFF, 0xD0]), "has RST markers");
                }
                // 512: full size (the chroma upsampled); 256, 128, 64: 1/2, 1/4, 1/8.
                for side in [512, 256, 128, 64] {
                    let cfg = IngestConfig {
                        image_size: side,
                        ..IngestConfig::default()
                    };
                    assert!(
                        dct::decode(&jpg, &cfg).expect("no error").is_some(),
                        "{sampling:?} restart {restart} side {side}: decoded"
                    );
                    let (a, pa) = pixels_with(&jpg, JpegCodec::Rust, side);
                    let (b, pb) = pixels_with(&jpg, JpegCodec::RustDct, side);
                    assert_eq!((b.orig_width, b.orig_height), (a.orig_width, a.orig_height));
                    let p = psnr(&pa, &pb);
                    worst = worst.min(p);
                    assert!(
                        p >= 40.0,
                        "{sampling:?} restart {restart} side {side}: {p:.2} dB"
                    );
                }
            }
        }
        println!("worst {worst:.2} dB");
    }

    /// The `rust-dct` decoder reads bytes nobody checked: mutated JPEGs (bytes overwritten in
    /// the headers and in the scan, cut short with and without the end marker put back, bytes
    /// inserted) must each come back as a picture, `None` or an error, never a panic. Called
    /// directly: `normalize_image` would turn a panic into a rejection and hide it.
    #[test]
    fn dct_decoder_survives_mutated_jpegs() {
        use jpeg_encoder::SamplingFactor as F;
        let (_, data) = sample_photos().swap_remove(2);
        let photo = image::load_from_memory(&data).expect("decode").into_rgb8();
        let small =
            image::imageops::resize(&photo, 203, 131, image::imageops::FilterType::Triangle);
        // Scaled (1/4) and full size.
        let configs = [32, 128].map(|image_size| IngestConfig {
            image_size,
            ..IngestConfig::default()
        });
        let mut seeds = Vec::new();
        for (sampling, restart) in [(F::F_2_2, 0u16), (F::F_2_1, 3), (F::F_1_1, 1)] {
            let mut jpg = Vec::new();
            let mut enc = jpeg_encoder::Encoder::new(&mut jpg, 85);
            enc.set_sampling_factor(sampling);
            enc.set_restart_interval(restart);
            enc.encode(small.as_raw(), 203, 131, jpeg_encoder::ColorType::Rgb)
                .expect("encode");
            for cfg in &configs {
                assert!(
                    dct::decode(&jpg, cfg).expect("no error").is_some(),
                    "seed decodes"
                );
            }
            seeds.push(jpg);
        }
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || xorshift(&mut state);
        let (mut decoded, mut declined) = (0, 0);
        // More with CM3_FUZZ_CASES, as the fuzz campaign (tests/fuzz.rs) takes.
        let rounds = std::env::var("CM3_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000usize);
        for round in 0..rounds {
            let seed = &seeds[round % seeds.len()];
            let mut bad = seed.clone();
            match round % 5 {
                // Headers (markers, tables, frame and scan fields).
                0 => {
                    for _ in 0..1 + next() % 3 {
                        let at = 2 + (next() as usize) % 620.min(bad.len() - 2);
                        bad[at] = next() as u8;
                    }
                }
                // Anywhere.
                1 | 2 => {
                    for _ in 0..1 + next() % 6 {
                        let at = (next() as usize) % bad.len();
                        bad[at] = next() as u8;
                    }
                }
                3 => {
                    let at = 2 + (next() as usize) % (bad.len() - 2);
                    bad.truncate(at);
                    if next() % 2 == 0 {
                        bad.extend_from_slice(&[0xFF, 0xD9]);
                    }
                }
                _ => {
                    let at = (next() as usize) % bad.len();
                    let n = 1 + (next() as usize) % 40;
                    let junk: Vec<u8> = (0..n).map(|_| next() as u8).collect();
                    bad.splice(at..at, junk);
                }
            }
            for cfg in &configs {
                match dct::decode(&bad, cfg) {
                    Ok(Some(_)) => decoded += 1,
                    Ok(None) | Err(_) => declined += 1,
                }
            }
        }
        println!("{rounds} mutated JPEGs: {decoded} decoded, {declined} declined or refused");
        assert!(decoded > 0 && declined > 0, "{decoded} / {declined}");
    }

    /// What `rust-dct` does not decode completely goes to the general decoder, which then
    /// decides exactly as for `rust`: progressive JPEGs, and scans that are cut short or
    /// corrupt. Its own decoder never panics on them.
    #[test]
    fn dct_decoder_leaves_progressive_cut_and_corrupt_jpegs_to_the_general_decoder() {
        let cfg = IngestConfig::default();
        let same_as_rust = |jpg: &[u8], what: &str| {
            let cfg = |codec| IngestConfig {
                jpeg_codec: Some(codec),
                ..IngestConfig::default()
            };
            let a = normalize_image(jpg, &cfg(JpegCodec::Rust)).map_err(|r| r.reason);
            let b = normalize_image(jpg, &cfg(JpegCodec::RustDct)).map_err(|r| r.reason);
            assert_eq!(a.map(|n| n.bytes), b.map(|n| n.bytes), "{what}");
        };
        let photo = detailed_photo();
        let progressive = jpeg_of(&photo, |enc| enc.set_progressive(true));
        assert!(dct::decode(&progressive, &cfg).expect("no error").is_none());
        same_as_rust(&progressive, "progressive");

        let baseline = jpeg_of(&photo, |enc| enc.set_restart_interval(4));
        let scan = baseline
            .windows(2)
            .position(|w| w == [0xFF, 0xDA])
            .expect("SOS");
        // Cut in the middle of the scan, with the end-of-image marker put back.
        let mut cut = baseline[..(scan + baseline.len()) / 2].to_vec();
        cut.extend_from_slice(&[0xFF, 0xD9]);
        assert!(dct::decode(&cut, &cfg).expect("no error").is_none(), "cut");
        same_as_rust(&cut, "cut");
        // Bytes of the scan overwritten (stuffing, markers and all): never a panic. Such a scan
        // may still decode (to wrong pixels, as with any decoder) or be given up.
        let mut given_up = 0;
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for round in 0..200 {
            let mut bad = baseline.clone();
            for _ in 0..1 + round % 8 {
                let r = xorshift(&mut state);
                let at = scan + 20 + (r as usize) % (baseline.len() - scan - 22);
                bad[at] = (r >> 32) as u8;
            }
            if dct::decode(&bad, &cfg).expect("no error").is_none() {
                given_up += 1;
                same_as_rust(&bad, "corrupt, given up");
            }
        }
        assert!(given_up > 0, "some corruptions are noticed");

        // Restart markers out of order (all RST0), and junk before one: the blocks would land
        // in the wrong places, so both are declined.
        let first_rst = scan
            + baseline[scan..]
                .windows(2)
                .position(|w| w[0] == 0xFF && (0xD0..=0xD7).contains(&w[1]))
                .expect("RST");
        let mut renumbered = baseline.clone();
        for i in scan..renumbered.len() - 1 {
            if renumbered[i] == 0xFF && (0xD1..=0xD7).contains(&renumbered[i + 1]) {
                renumbered[i + 1] = 0xD0;
            }
        }
        assert!(
            dct::decode(&renumbered, &cfg).expect("no error").is_none(),
            "renumbered"
        );
        same_as_rust(&renumbered, "renumbered");
        let mut junk = baseline.clone();
        junk.splice(first_rst..first_rst, [0x12, 0x34]);
        assert!(
            dct::decode(&junk, &cfg).expect("no error").is_none(),
            "junk"
        );
        same_as_rust(&junk, "junk before a restart");

        // A frame declared at 9000 x 9000 (within the pixel limit) with no entropy data: given
        // up within the first row of MCUs, not decoded from zeros to the end.
        let sof = baseline
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .expect("SOF0");
        // Everything up to the end of the scan header, then the end marker.
        let len = usize::from(u16::from_be_bytes([baseline[scan + 2], baseline[scan + 3]]));
        let mut empty = baseline[..scan + 2 + len].to_vec();
        empty.extend_from_slice(&[0xFF, 0xD9]);
        empty[sof + 5..sof + 9].copy_from_slice(&[0x23, 0x28, 0x23, 0x28]);
        assert!(
            dct::decode(&empty, &cfg).expect("no error").is_none(),
            "empty scan"
        );
        // The same with tables whose only codes are 16 zero bits (DC size 11, AC run 0 size 15):
        // zeros fed past the end decode as valid blocks of 1,980 bits each, 7.5e9 bits over the
        // frame, had the decoder not stopped at the first row.
        let mut bomb = vec![0xFF, 0xD8, 0xFF, 0xDB, 0, 67, 0];
        bomb.extend([1u8; 64]);
        bomb.extend([0xFF, 0xC0, 0, 17, 8, 0x23, 0x28, 0x23, 0x28, 3]);
        for id in 1..=3 {
            bomb.extend([id, 0x11, 0]);
        }
        for (class, symbol) in [(0x00, 11), (0x10, 0x0F)] {
            bomb.extend([0xFF, 0xC4, 0, 20, class]);
            bomb.extend([0u8; 15]);
            bomb.extend([1, symbol]);
        }
        bomb.extend([0xFF, 0xDA, 0, 12, 3, 1, 0, 2, 0, 3, 0, 0, 63, 0, 0xFF, 0xD9]);
        let started = std::time::Instant::now();
        assert!(
            dct::decode(&bomb, &cfg).expect("no error").is_none(),
            "zeros bomb"
        );
        println!(
            "9000 x 9000 of zero-bit codes declined in {:?}",
            started.elapsed()
        );
    }
}
