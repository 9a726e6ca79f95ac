//! CLIP image preprocessing exactly as OpenAI CLIP and clip-retrieval do it with PIL and
//! torchvision: RGB; resize so the shorter side is 224 (the longer one `int(224 * long / short)`,
//! truncated) with antialiased bicubic; centre-crop 224 with torchvision's offsets
//! (`int(round((n - 224) / 2))`, Python's round-half-to-even); scale to [0, 1]; normalise with
//! CLIP's mean and std; CHW float32.
use image::{DynamicImage, RgbImage};

use crate::error::{EmbedError, Result};

/// Side of CLIP ViT-B/32's input.
pub const CLIP_SIZE: u32 = 224;
/// OpenAI's published values, written as published (f32 rounds them as PyTorch does).
#[allow(clippy::excessive_precision)]
pub const CLIP_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// torchvision's `Resize(size)` for an int size: shorter side to `size`, aspect kept, truncated.
pub fn resized_dims(w: u32, h: u32, size: u32) -> (u32, u32) {
    if w <= h {
        (
            size,
            (u64::from(size) * u64::from(h) / u64::from(w.max(1))) as u32,
        )
    } else {
        (
            (u64::from(size) * u64::from(w) / u64::from(h.max(1))) as u32,
            size,
        )
    }
}

/// `int(round(x / 2))` for a non-negative integer x, with Python's round-half-to-even.
fn half_round_even(x: u32) -> u32 {
    let q = x / 2;
    if x % 2 == 1 && q % 2 == 1 { q + 1 } else { q }
}

/// Pillow's BICUBIC kernel (`a = -0.5`).
fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point precision of Pillow's 8-bit resampling.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for one axis: per output pixel the first
/// input index, and the integer weights.
fn coefficients(in_size: u32, out_size: u32) -> Vec<(usize, Vec<i32>)> {
    let scale = f64::from(in_size) / f64::from(out_size);
    let filterscale = scale.max(1.0);
    let support = 2.0 * filterscale;
    let mut out = Vec::with_capacity(out_size as usize);
    for xx in 0..out_size {
        let center = (f64::from(xx) + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) cast truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(i64::from(in_size)) as usize;
        let mut w: Vec<f64> = (xmin..xmax)
            .map(|x| bicubic((x as f64 - center + 0.5) * ss))
            .collect();
        let total: f64 = w.iter().sum();
        if total != 0.0 {
            w.iter_mut().for_each(|v| *v /= total);
        }
        let one = f64::from(1u32 << PRECISION_BITS);
        let k = w
            .iter()
            .map(|&v| {
                if v < 0.0 {
                    (-0.5 + v * one).trunc() as i32
                } else {
                    (0.5 + v * one).trunc() as i32
                }
            })
            .collect();
        out.push((xmin, k));
    }
    out
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `Image.resize(size, BICUBIC)` on 8-bit RGB, bit for bit: a horizontal pass over the
/// rows the vertical pass needs, rounded to 8 bits, then a vertical pass.
pub fn pil_resize_bicubic(rgb: &[u8], w: u32, h: u32, out_w: u32, out_h: u32) -> Vec<u8> {
    let horiz = coefficients(w, out_w);
    let vert = coefficients(h, out_h);
    let first_row = vert.first().map_or(0, |(s, _)| *s);
    let last_row = vert.last().map_or(0, |(s, k)| s + k.len());
    let (w, ow) = (w as usize, out_w as usize);
    let half = 1i64 << (PRECISION_BITS - 1);
    let rows = last_row - first_row;
    let mut tmp = vec![0u8; rows * ow * 3];
    for r in 0..rows {
        let src = &rgb[(first_row + r) * w * 3..(first_row + r + 1) * w * 3];
        let dst = &mut tmp[r * ow * 3..(r + 1) * ow * 3];
        for (x, (start, k)) in horiz.iter().enumerate() {
            let mut acc = [half; 3];
            for (i, &kv) in k.iter().enumerate() {
                let p = &src[(start + i) * 3..(start + i) * 3 + 3];
                for c in 0..3 {
                    acc[c] += i64::from(p[c]) * i64::from(kv);
                }
            }
            for c in 0..3 {
                dst[x * 3 + c] = clip8(acc[c]);
            }
        }
    }
    let mut out = vec![0u8; out_h as usize * ow * 3];
    for (y, (start, k)) in vert.iter().enumerate() {
        let dst = &mut out[y * ow * 3..(y + 1) * ow * 3];
        for (x, d) in dst.iter_mut().enumerate() {
            let mut acc = half;
            for (i, &kv) in k.iter().enumerate() {
                acc += i64::from(tmp[(start - first_row + i) * ow * 3 + x]) * i64::from(kv);
            }
            *d = clip8(acc);
        }
    }
    out
}

/// Resize and centre-crop an RGB image to `size` x `size` pixels (HWC, u8).
pub fn resize_center_crop(img: &RgbImage, size: u32) -> Result<Vec<u8>> {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return Err(EmbedError::Image(format!("empty image {w}x{h}")));
    }
    let (rw, rh) = resized_dims(w, h, size);
    let buf = pil_resize_bicubic(img.as_raw(), w, h, rw, rh);
    let (left, top) = (half_round_even(rw - size), half_round_even(rh - size));
    let mut out = Vec::with_capacity((size * size * 3) as usize);
    for y in top..top + size {
        let row = (y * rw + left) as usize * 3;
        out.extend_from_slice(&buf[row..row + size as usize * 3]);
    }
    Ok(out)
}

/// The model input for one image: CHW float32, 3 x `size` x `size`, normalised.
pub fn preprocess(img: &DynamicImage, size: u32) -> Result<Vec<f32>> {
    // PIL's convert("RGB") drops alpha; images from `pairs/` have none (ingest composites on white).
    let rgb = img.to_rgb8();
    let hwc = resize_center_crop(&rgb, size)?;
    let plane = (size * size) as usize;
    let mut chw = vec![0f32; 3 * plane];
    for (i, px) in hwc.chunks_exact(3).enumerate() {
        for c in 0..3 {
            chw[c * plane + i] = (f32::from(px[c]) / 255.0 - CLIP_MEAN[c]) / CLIP_STD[c];
        }
    }
    Ok(chw)
}

/// Decode image bytes (any format the `image` crate reads) and preprocess them.
pub fn preprocess_bytes(data: &[u8], size: u32) -> Result<Vec<f32>> {
    #[cfg(feature = "turbojpeg")]
    if let Some(img) = decode_jpeg_like_pil(data, MAX_TURBOJPEG_SIDE) {
        return preprocess(&img, size);
    }
    let img =
        image::load_from_memory(data).map_err(|e| EmbedError::Image(format!("decoding: {e}")))?;
    preprocess(&img, size)
}

/// Largest side [`preprocess_bytes`] lets libjpeg-turbo decode (larger JPEGs go to the `image`
/// crate, whose limits then apply).
#[cfg(feature = "turbojpeg")]
const MAX_TURBOJPEG_SIDE: u32 = 16_384;

/// JPEG through libjpeg-turbo, the decoder PIL uses: the same pixels, bit for bit. `None` for
/// other formats, for what libjpeg-turbo cannot decode to RGB (CMYK), and for a side over
/// `max_side` (checked on the header, before anything is allocated): left to `image`.
#[cfg(feature = "turbojpeg")]
pub fn decode_jpeg_like_pil(data: &[u8], max_side: u32) -> Option<DynamicImage> {
    if image::guess_format(data).ok()? != image::ImageFormat::Jpeg {
        return None;
    }
    let header = turbojpeg::read_header(data).ok()?;
    if matches!(
        header.colorspace,
        turbojpeg::Colorspace::CMYK | turbojpeg::Colorspace::YCCK
    ) || header.width > max_side as usize
        || header.height > max_side as usize
    {
        return None;
    }
    let img = turbojpeg::decompress(data, turbojpeg::PixelFormat::RGB).ok()?;
    let buf = RgbImage::from_raw(img.width as u32, img.height as u32, img.pixels)?;
    Some(DynamicImage::ImageRgb8(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torchvision_resize_and_crop_arithmetic() {
        assert_eq!(resized_dims(123, 456, 224), (224, 830));
        assert_eq!(resized_dims(456, 123, 224), (830, 224));
        assert_eq!(resized_dims(640, 480, 224), (298, 224));
        // round(9.5) = 10, round(10.5) = 10, round(0.5) = 0 in Python.
        assert_eq!(half_round_even(19), 10);
        assert_eq!(half_round_even(21), 10);
        assert_eq!(half_round_even(1), 0);
        assert_eq!(half_round_even(74), 37);
    }
}
