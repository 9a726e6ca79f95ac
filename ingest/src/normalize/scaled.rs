//! The `rust-scaled` JPEG codec's decoder: large JPEGs decoded scaled in the DCT by jpeg-decoder
//! (1/2, 1/4 or 1/8), so that the inverse DCT, colour conversion and the resize run on a quarter
//! of the pixels or fewer. Only the Huffman decoding still covers the whole image.

use image::metadata::Orientation;
use image::{DynamicImage, RgbImage};
use jpeg_decoder::{CodingProcess, PixelFormat};

use super::{Decoded, RejectReason, Rejection, check_pixels};
use crate::config::IngestConfig;

/// How much larger than `image_size` the scaled shorter side must stay. At 1 (just not below
/// the output) the resize has no room left to filter what the DCT scaling lets through, and the
/// chroma of 4:2:0 JPEGs ends up at half the output resolution: measured down to 36 dB PSNR
/// against the full decode on the sample's photos and 30 dB on the benchmark's. At 1.5, the
/// sample's photos stay at 44.7 dB or more (see the tests).
const MIN_RATIO_NUM: u32 = 3;
const MIN_RATIO_DEN: u32 = 2;

/// Side of a `len`-pixel axis decoded at `n`/8, rounded up as jpeg-decoder (and libjpeg) do.
fn scaled_len(len: u32, n: u32) -> u32 {
    (len * n).div_ceil(8)
}

/// The DCT scale `n` (decoding at `n`/8, `n` in 1, 2, 4, 8) for an image whose shorter side is
/// `short`: the smallest whose shorter side is still at least 1.5 x `side`. 8 means full size.
pub(super) fn dct_scale_for(short: u32, side: u32) -> u32 {
    // Exact: short * n/8 >= side * NUM/DEN, on the picture's extent rather than the rounded-up
    // pixel count.
    let (short, side) = (u64::from(short), u64::from(side));
    [1, 2, 4]
        .into_iter()
        .find(|&n| {
            short * u64::from(n) * u64::from(MIN_RATIO_DEN) >= 8 * side * u64::from(MIN_RATIO_NUM)
        })
        .unwrap_or(8)
}

/// Decode a JPEG scaled in the DCT; `None` when scaling would not reduce it (shorter side under
/// 3 x `image_size`) or the JPEG is anything but 8-bit grey or YCbCr/RGB (CMYK, 16-bit,
/// lossless), or jpeg-decoder cannot read it: the general decoder then decodes it at full size,
/// exactly as the `rust` codec does.
pub(super) fn decode(data: &[u8], cfg: &IngestConfig) -> Result<Option<Decoded>, Rejection> {
    let mut decoder = jpeg_decoder::Decoder::new(data);
    if decoder.read_info().is_err() {
        return Ok(None);
    }
    let Some(info) = decoder.info() else {
        return Ok(None);
    };
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    // The pixel limit applies to the declared size, before anything is decoded.
    check_pixels(w, h, cfg)?;
    let supported_format = matches!(info.pixel_format, PixelFormat::RGB24 | PixelFormat::L8);
    let dct = matches!(
        info.coding_process,
        CodingProcess::DctSequential | CodingProcess::DctProgressive
    );
    let n = dct_scale_for(w.min(h), cfg.image_size);
    if !supported_format || !dct || n == 8 {
        return Ok(None);
    }
    let (sw, sh) = (scaled_len(w, n), scaled_len(h, n));
    let (Ok(req_w), Ok(req_h)) = (u16::try_from(sw), u16::try_from(sh)) else {
        return Ok(None);
    };
    // jpeg-decoder picks the smallest scale reaching the request on either axis; asking for
    // exactly the size at `n` selects `n` (a smaller scale is smaller on both axes).
    match decoder.scale(req_w, req_h) {
        Ok(got) if got == (req_w, req_h) => {}
        _ => return Ok(None),
    }
    let Ok(pixels) = decoder.decode() else {
        return Ok(None);
    };
    let (sw_px, sh_px) = (sw as usize, sh as usize);
    let rgb = match info.pixel_format {
        PixelFormat::L8 if pixels.len() == sw_px * sh_px => {
            pixels.iter().flat_map(|&v| [v, v, v]).collect()
        }
        PixelFormat::RGB24 if pixels.len() == 3 * sw_px * sh_px => pixels,
        _ => return Ok(None),
    };
    // jpeg-decoder ignores EXIF orientation; it hands over the same TIFF block as the general
    // decoder, read the same way. A broken block means no rotation, as there.
    let orientation = decoder
        .exif_data()
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    upright(rgb, (sw, sh), (w, h), n, orientation, false).map(Some)
}

/// A decode at `n`/8 (`pixels`, 3 bytes a pixel, `buffer` wide and high: the scaled picture
/// and any padding right and below) of a JPEG stored `stored` wide and high, turned upright by
/// `orientation`, with where the picture lies in it. `ycbcr` says what the pixels are.
pub(super) fn upright(
    pixels: Vec<u8>,
    buffer: (u32, u32),
    (w, h): (u32, u32),
    n: u32,
    orientation: Orientation,
    ycbcr: bool,
) -> Result<Decoded, Rejection> {
    let buf = RgbImage::from_raw(buffer.0, buffer.1, pixels).ok_or_else(|| {
        Rejection::new(
            RejectReason::CorruptImage,
            "scaled JPEG decode: buffer has the wrong size",
        )
    })?;
    let mut img = DynamicImage::ImageRgb8(buf);
    img.apply_orientation(orientation);
    // Decided by the orientation, not by comparing sizes: two sides may round to the same length.
    let swapped = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let (orig_width, orig_height) = if swapped { (h, w) } else { (w, h) };
    let (width, height) = (img.width(), img.height());
    // Block b of the original covers pixels 8b..8b+8 and n*b..n*b+n once scaled: exactly n/8.
    let ratio = f64::from(n) / 8.0;
    let (pad_w, pad_h) = (
        f64::from(buffer.0) - f64::from(w) * ratio,
        f64::from(buffer.1) - f64::from(h) * ratio,
    );
    let (left, top) = content_origin(orientation, pad_w, pad_h);
    Ok(Decoded {
        rgb: img.into_rgb8().into_raw(),
        ycbcr,
        width,
        height,
        orig_width,
        orig_height,
        content: Some([
            left,
            top,
            f64::from(orig_width) * ratio,
            f64::from(orig_height) * ratio,
        ]),
    })
}

/// Where the picture starts in the upright decoded image. A scaled decode pads the stored right
/// and bottom edges (by `pad_w`, `pad_h` pixels) up to whole pixels; the orientation moves those
/// edges (`rotate90` turns the bottom edge into the left one, `rotate270` the right into the top).
pub(super) fn content_origin(o: Orientation, pad_w: f64, pad_h: f64) -> (f64, f64) {
    match o {
        Orientation::NoTransforms | Orientation::Rotate90FlipH => (0.0, 0.0),
        Orientation::FlipHorizontal => (pad_w, 0.0),
        Orientation::FlipVertical => (0.0, pad_h),
        Orientation::Rotate180 => (pad_w, pad_h),
        Orientation::Rotate90 => (pad_h, 0.0),
        Orientation::Rotate270 => (0.0, pad_w),
        Orientation::Rotate270FlipH => (pad_h, pad_w),
    }
}
