//! cm3's own baseline JPEG encoder for the YCbCr pixels an ingest writes: what jpeg-encoder
//! writes for them (its headers and tables, copied from a small JPEG it encodes once per thread
//! and setting; its quantisation, point-sampled 4:2:0 chroma and Huffman coding), with the
//! forward DCT rounded as libjpeg's `islow` rounds it. jpeg-encoder's AVX2 forward DCT truncates
//! two rows in odd columns; with that rounding instead, the bytes are jpeg-encoder's exactly
//! (tested). Written for speed: the DCT runs on 8 lanes at once, the entropy coder walks only
//! the non-zero coefficients, and the whole of it is compiled a second time for AVX2 where the
//! CPU has it. jpeg-encoder was a fifth of an ingest.

use std::cell::RefCell;
use std::rc::Rc;

use super::dct::{UNZIGZAG, be16};

/// jpeg-encoder's quantisation: the divisor is the table value times 8 (the DCT's scale), and
/// the division a multiplication by a 15-bit reciprocal with a rounding correction.
const SHIFT: u32 = 15;

#[derive(Clone)]
struct Quant {
    reciprocal: [i32; 64],
    correction: [i32; 64],
    /// What the forward DCT adds before its last shift of rows 0 and 4: `ROUND_HALF`, as
    /// libjpeg does (the tests also check the other rounding jpeg-encoder's AVX2 code has).
    even_round: Lanes,
}

impl Quant {
    /// From a DQT table in zig-zag order, as jpeg-encoder builds it from the same values.
    fn new(zigzag: &[u16; 64]) -> Quant {
        let mut q = Quant {
            reciprocal: [0; 64],
            correction: [0; 64],
            even_round: ROUND_HALF,
        };
        for (k, &v) in zigzag.iter().enumerate() {
            let divisor = u32::from(v) << 3;
            let (r, c) = if divisor <= 1 {
                (1, 0)
            } else {
                let mut r = (1u32 << SHIFT) / divisor;
                let fractional = (1u32 << SHIFT) % divisor;
                let mut c = divisor / 2;
                if fractional != 0 {
                    if fractional <= c {
                        c += 1;
                    } else {
                        r += 1;
                    }
                }
                (r, c)
            };
            q.reciprocal[UNZIGZAG[k]] = r as i32;
            q.correction[UNZIGZAG[k]] = c as i32;
        }
        q
    }
}

/// A Huffman table for writing: code and length by symbol.
#[derive(Clone)]
struct Codes {
    code: [u32; 256],
    len: [u32; 256],
}

impl Codes {
    /// From a DHT definition's 16 counts and symbols (canonical codes).
    fn new(counts: &[u8], symbols: &[u8]) -> Option<Codes> {
        let mut t = Codes {
            code: [0; 256],
            len: [0; 256],
        };
        let (mut code, mut k) = (0u32, 0usize);
        for (len, &count) in (1u32..).zip(counts) {
            for _ in 0..count {
                let s = usize::from(*symbols.get(k)?);
                t.code[s] = code;
                t.len[s] = len;
                code += 1;
                k += 1;
            }
            code <<= 1;
        }
        Some(t)
    }
}

/// What jpeg-encoder writes before the scan data for one setting, and the tables in it.
struct Template {
    header: Vec<u8>,
    /// By component (Y, Cb, Cr).
    quant: [Quant; 3],
    dc: [Rc<Codes>; 3],
    ac: [Rc<Codes>; 3],
    /// 2 for 4:2:0 (luma sampled 2 x 2 per MCU), 1 for 4:4:4.
    luma_blocks: usize,
}

/// jpeg-encoder writing into `out` at `quality`, chroma 4:2:0 when `subsampled`, else 4:4:4.
pub(super) fn jpeg_encoder_into(
    out: &mut Vec<u8>,
    quality: u8,
    subsampled: bool,
) -> jpeg_encoder::Encoder<&mut Vec<u8>> {
    let mut encoder = jpeg_encoder::Encoder::new(out, quality);
    encoder.set_sampling_factor(if subsampled {
        jpeg_encoder::SamplingFactor::F_2_2
    } else {
        jpeg_encoder::SamplingFactor::F_1_1
    });
    encoder
}

impl Template {
    /// jpeg-encoder's own JPEG of a small flat picture at `quality`, read up to its scan data,
    /// with the frame header's size set to `side` x `side` (the only part that depends on it).
    fn new(side: u16, quality: u8, subsampled: bool) -> Result<Template, String> {
        let mut jpeg = Vec::new();
        let encoder = jpeg_encoder_into(&mut jpeg, quality, subsampled);
        encoder
            .encode(
                &[128u8; 3 * 16 * 16],
                16,
                16,
                jpeg_encoder::ColorType::Ycbcr,
            )
            .map_err(|e| e.to_string())?;
        Self::read(&jpeg, side, subsampled)
            .ok_or_else(|| "jpeg-encoder's header not understood".into())
    }

    fn read(jpeg: &[u8], side: u16, subsampled: bool) -> Option<Template> {
        let mut quant: [Option<[u16; 64]>; 4] = [None; 4];
        let mut dc: [Option<Rc<Codes>>; 4] = Default::default();
        let mut ac: [Option<Rc<Codes>>; 4] = Default::default();
        let mut quant_of = [0usize; 3];
        let mut frame_at = None;
        let mut i = 2;
        loop {
            if *jpeg.get(i)? != 0xFF {
                return None;
            }
            let marker = *jpeg.get(i + 1)?;
            let len = be16(jpeg, i + 2)?;
            let seg = jpeg.get(i + 4..i + 2 + len)?;
            match marker {
                0xDB => {
                    let mut s = seg;
                    while !s.is_empty() {
                        let id = usize::from(s[0] & 15);
                        if s[0] >> 4 != 0 || id > 3 {
                            return None;
                        }
                        let values = s.get(1..65)?;
                        quant[id] = Some(std::array::from_fn(|k| u16::from(values[k])));
                        s = &s[65..];
                    }
                }
                0xC4 => {
                    let mut s = seg;
                    while !s.is_empty() {
                        let (class, id) = (s[0] >> 4, usize::from(s[0] & 15));
                        let counts = s.get(1..17)?;
                        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
                        let table = Rc::new(Codes::new(counts, s.get(17..17 + total)?)?);
                        match class {
                            0 => *dc.get_mut(id)? = Some(table),
                            _ => *ac.get_mut(id)? = Some(table),
                        }
                        s = &s[17 + total..];
                    }
                }
                0xC0 => {
                    frame_at = Some(i);
                    if seg.get(5) != Some(&3) {
                        return None;
                    }
                    let luma = seg.get(7)?;
                    if *luma != if subsampled { 0x22 } else { 0x11 } {
                        return None;
                    }
                    for (c, q) in quant_of.iter_mut().enumerate() {
                        *q = usize::from(*seg.get(8 + 3 * c)?) & 3;
                    }
                }
                0xDA => {
                    let table = |c: usize| Some(*seg.get(2 + 2 * c)?);
                    let pick = |tables: &[Option<Rc<Codes>>; 4], c: usize, high: bool| {
                        let t = table(c)?;
                        let id = usize::from(if high { t >> 4 } else { t & 15 }) & 3;
                        tables[id].clone()
                    };
                    let mut header = jpeg.get(..i + 2 + len)?.to_vec();
                    // Height, then width, after the marker, the length and the precision.
                    let at = frame_at? + 5;
                    let [hi, lo] = side.to_be_bytes();
                    header
                        .get_mut(at..at + 4)?
                        .copy_from_slice(&[hi, lo, hi, lo]);
                    let q = |c: usize| quant[quant_of[c]].map(|q| Quant::new(&q));
                    return Some(Template {
                        header,
                        quant: [q(0)?, q(1)?, q(2)?],
                        dc: [
                            pick(&dc, 0, true)?,
                            pick(&dc, 1, true)?,
                            pick(&dc, 2, true)?,
                        ],
                        ac: [
                            pick(&ac, 0, false)?,
                            pick(&ac, 1, false)?,
                            pick(&ac, 2, false)?,
                        ],
                        luma_blocks: if subsampled { 2 } else { 1 },
                    });
                }
                _ => {}
            }
            i += 2 + len;
        }
    }
}

/// Templates made on this thread, by (side, quality, subsampled).
type Templates = Vec<((u16, u8, bool), Rc<Template>)>;

thread_local! {
    static TEMPLATES: RefCell<Templates> = const { RefCell::new(Vec::new()) };
}

fn template(side: u16, quality: u8, subsampled: bool) -> Result<Rc<Template>, String> {
    let key = (side, quality, subsampled);
    if let Some(t) = TEMPLATES.with(|t| {
        t.borrow()
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, t)| Rc::clone(t))
    }) {
        return Ok(t);
    }
    let t = Rc::new(Template::new(side, quality, subsampled)?);
    TEMPLATES.with(|cache| {
        let mut cache = cache.borrow_mut();
        // A run uses one setting; a few are kept for programs that mix them.
        if cache.len() == 4 {
            cache.remove(0);
        }
        cache.push((key, Rc::clone(&t)));
    });
    Ok(t)
}

/// Encode `pixels` (`side` x `side` YCbCr, 3 bytes a pixel) as jpeg-encoder would at
/// `quality`, chroma 4:2:0 when `subsampled`, else 4:4:4.
pub(super) fn encode_ycbcr(
    pixels: &[u8],
    side: u16,
    quality: u8,
    subsampled: bool,
) -> Result<Vec<u8>, String> {
    let n = usize::from(side);
    if side == 0 || pixels.len() != 3 * n * n {
        return Err(format!(
            "{} bytes for a {side} x {side} YCbCr picture",
            pixels.len()
        ));
    }
    Ok(encode_with(
        pixels,
        n,
        &*template(side, quality, subsampled)?,
    ))
}

fn encode_with(pixels: &[u8], n: usize, t: &Template) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.header.len() + n * n / 2 + 64);
    out.extend_from_slice(&t.header);
    scan(pixels, n, t, &mut out);
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

fn scan(pixels: &[u8], n: usize, t: &Template, out: &mut Vec<u8>) {
    #[cfg(target_arch = "x86_64")]
    if super::dct::avx2_bmi() {
        return simd::scan_avx2(pixels, n, t, out);
    }
    scan_body(pixels, n, t, out);
}

#[cfg(target_arch = "x86_64")]
mod simd {
    #![allow(unsafe_code)]
    use super::{Template, scan_body};

    #[target_feature(enable = "avx2,bmi1,bmi2")]
    fn scan_avx2_inner(pixels: &[u8], n: usize, t: &Template, out: &mut Vec<u8>) {
        scan_body(pixels, n, t, out);
    }

    /// Only called after `avx2_bmi()` found AVX2, BMI1 and BMI2.
    pub(super) fn scan_avx2(pixels: &[u8], n: usize, t: &Template, out: &mut Vec<u8>) {
        // SAFETY: the caller checked that this CPU has every feature the function is compiled
        // for; that is the only requirement of calling a `target_feature` function.
        unsafe { scan_avx2_inner(pixels, n, t, out) }
    }
}

/// The entropy-coded bits, most significant first, with JPEG's byte stuffing.
struct BitWriter<'a> {
    out: &'a mut Vec<u8>,
    acc: u64,
    /// Bits in `acc` not yet written (at most 32 between calls).
    bits: u32,
}

impl BitWriter<'_> {
    /// `len` (at most 32) bits of `value`.
    #[inline(always)]
    fn put(&mut self, value: u32, len: u32) {
        self.acc = (self.acc << len) | u64::from(value);
        self.bits += len;
        if self.bits >= 32 {
            self.bits -= 32;
            let word = (self.acc >> self.bits) as u32;
            let bytes = word.to_be_bytes();
            // No 0xFF byte: all four at once.
            if (word & 0x8080_8080 & !word.wrapping_add(0x0101_0101)) == 0 {
                self.out.extend_from_slice(&bytes);
            } else {
                for b in bytes {
                    self.out.push(b);
                    if b == 0xFF {
                        self.out.push(0);
                    }
                }
            }
        }
    }

    /// The last bits, padded to a byte with ones.
    fn finish(mut self) {
        self.put(0x7F, 7);
        while self.bits >= 8 {
            self.bits -= 8;
            let b = (self.acc >> self.bits) as u8;
            self.out.push(b);
            if b == 0xFF {
                self.out.push(0);
            }
        }
    }
}

/// A value's size category and its bits (JPEG's coding of a coefficient or difference).
#[inline(always)]
fn size_and_bits(v: i32) -> (u32, u32) {
    let size = 32 - v.unsigned_abs().leading_zeros();
    let bits = (v - i32::from(v < 0)) as u32 & ((1u32 << size) - 1);
    (size, bits)
}

type Lanes = [i32; 8];

const CONST_BITS: i32 = 13;
const PASS1_BITS: i32 = 2;

#[inline(always)]
fn descale(x: i32, n: i32) -> i32 {
    (x + (1 << (n - 1))) >> n
}

/// One pass of libjpeg's `islow` forward DCT (jpeg-encoder's port, integer for integer) over
/// eight 8-point signals at once: `d[k][i]` is sample `k` of signal `i`.
#[inline(always)]
fn fdct_pass(d: &[Lanes; 8], first: bool, even_round: &Lanes) -> [Lanes; 8] {
    let mut o = [[0i32; 8]; 8];
    let odd_shift = if first {
        CONST_BITS - PASS1_BITS
    } else {
        CONST_BITS + PASS1_BITS
    };
    for i in 0..8 {
        let tmp0 = d[0][i] + d[7][i];
        let tmp7 = d[0][i] - d[7][i];
        let tmp1 = d[1][i] + d[6][i];
        let tmp6 = d[1][i] - d[6][i];
        let tmp2 = d[2][i] + d[5][i];
        let tmp5 = d[2][i] - d[5][i];
        let tmp3 = d[3][i] + d[4][i];
        let tmp4 = d[3][i] - d[4][i];
        let tmp10 = tmp0 + tmp3;
        let tmp13 = tmp0 - tmp3;
        let tmp11 = tmp1 + tmp2;
        let tmp12 = tmp1 - tmp2;
        if first {
            o[0][i] = (tmp10 + tmp11) << PASS1_BITS;
            o[4][i] = (tmp10 - tmp11) << PASS1_BITS;
        } else {
            o[0][i] = (tmp10 + tmp11 + even_round[i]) >> PASS1_BITS;
            o[4][i] = (tmp10 - tmp11 + even_round[i]) >> PASS1_BITS;
        }
        let z1 = (tmp12 + tmp13) * 4433;
        o[2][i] = descale(z1 + tmp13 * 6270, odd_shift);
        o[6][i] = descale(z1 + tmp12 * -15137, odd_shift);
        let z1 = tmp4 + tmp7;
        let z2 = tmp5 + tmp6;
        let z3 = tmp4 + tmp6;
        let z4 = tmp5 + tmp7;
        let z5 = (z3 + z4) * 9633;
        let tmp4 = tmp4 * 2446;
        let tmp5 = tmp5 * 16819;
        let tmp6 = tmp6 * 25172;
        let tmp7 = tmp7 * 12299;
        let z1 = z1 * -7373;
        let z2 = z2 * -20995;
        let z3 = z3 * -16069 + z5;
        let z4 = z4 * -3196 + z5;
        o[7][i] = descale(tmp4 + z1 + z3, odd_shift);
        o[5][i] = descale(tmp5 + z2 + z4, odd_shift);
        o[3][i] = descale(tmp6 + z2 + z3, odd_shift);
        o[1][i] = descale(tmp7 + z1 + z4, odd_shift);
    }
    o
}

/// Forward DCT of a block given by columns (`columns[x][y]`, level-shifted), to natural order
/// (`[v][u]`). Rows first, as libjpeg: pass 1 transforms the 8 rows at once, one per lane.
/// `fdct` rounds the second pass's even outputs as libjpeg does, adding half before shifting.
const ROUND_HALF: Lanes = [1 << (PASS1_BITS - 1); 8];

#[inline(always)]
fn fdct(columns: &[Lanes; 8], even_round: &Lanes) -> [Lanes; 8] {
    let by_row = fdct_pass(columns, true, even_round);
    // by_row[u][y] is coefficient u of row y; pass 2 wants row y's coefficients as lanes.
    let rows: [Lanes; 8] = std::array::from_fn(|y| std::array::from_fn(|u| by_row[u][y]));
    fdct_pass(&rows, false, even_round)
}

/// One block: gathered from `pixels` (channel `c`, every `step`th pixel from (`x0`, `y0`),
/// clamped to the picture as jpeg-encoder pads it), transformed, quantised and written.
#[inline(always)]
fn block(
    pixels: &[u8],
    n: usize,
    (x0, y0, step, c): (usize, usize, usize, usize),
    quant: &Quant,
    (dc, ac): (&Codes, &Codes),
    prev_dc: &mut i32,
    w: &mut BitWriter<'_>,
) {
    let mut columns = [[0i32; 8]; 8];
    for y in 0..8 {
        let row = &pixels[3 * n * (y0 + y * step).min(n - 1)..][..3 * n];
        for (x, column) in columns.iter_mut().enumerate() {
            column[y] = i32::from(row[3 * (x0 + x * step).min(n - 1) + c]) - 128;
        }
    }
    let coef = fdct(&columns, &quant.even_round);
    let mut q = [0i32; 64];
    for k in 0..64 {
        let v = coef[k / 8][k % 8];
        let p = ((v.abs() + quant.correction[k]) * quant.reciprocal[k]) >> SHIFT;
        q[k] = if v < 0 { -p } else { p };
    }
    let diff = q[0] - *prev_dc;
    *prev_dc = q[0];
    let (size, bits) = size_and_bits(diff);
    w.put(
        dc.code[size as usize] << size | bits,
        dc.len[size as usize] + size,
    );
    // The non-zero AC coefficients in zig-zag order, as bits of a mask.
    let mut mask = 0u64;
    let mut zz = [0i32; 64];
    for k in 1..64 {
        zz[k] = q[UNZIGZAG[k]];
        mask |= u64::from(zz[k] != 0) << k;
    }
    let mut last = 0u32;
    while mask != 0 {
        let k = mask.trailing_zeros();
        mask &= mask - 1;
        let mut run = k - last - 1;
        while run > 15 {
            w.put(ac.code[0xF0], ac.len[0xF0]);
            run -= 16;
        }
        let (size, bits) = size_and_bits(zz[k as usize]);
        let symbol = (run << 4 | size) as usize;
        w.put(ac.code[symbol] << size | bits, ac.len[symbol] + size);
        last = k;
    }
    if last != 63 {
        w.put(ac.code[0], ac.len[0]);
    }
}

#[inline(always)]
fn scan_body(pixels: &[u8], n: usize, t: &Template, out: &mut Vec<u8>) {
    let mut w = BitWriter {
        out,
        acc: 0,
        bits: 0,
    };
    let mcu = 8 * t.luma_blocks;
    let mcus = n.div_ceil(mcu);
    let mut prev = [0i32; 3];
    let tables = |c: usize| (&*t.dc[c], &*t.ac[c]);
    for my in 0..mcus {
        for mx in 0..mcus {
            let (x, y) = (mx * mcu, my * mcu);
            for by in 0..t.luma_blocks {
                for bx in 0..t.luma_blocks {
                    let at = (x + 8 * bx, y + 8 * by, 1, 0);
                    block(pixels, n, at, &t.quant[0], tables(0), &mut prev[0], &mut w);
                }
            }
            for (c, prev) in prev.iter_mut().enumerate().skip(1) {
                let at = (x, y, t.luma_blocks, c);
                block(pixels, n, at, &t.quant[c], tables(c), prev, &mut w);
            }
        }
    }
    w.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// jpeg-encoder's own bytes for the same pixels.
    fn theirs(pixels: &[u8], side: u16, quality: u8, subsampled: bool) -> Vec<u8> {
        let mut jpeg = Vec::new();
        jpeg_encoder_into(&mut jpeg, quality, subsampled)
            .encode(pixels, side, side, jpeg_encoder::ColorType::Ycbcr)
            .expect("encode");
        jpeg
    }

    /// Pictures that exercise the coder: noise (every value, long zero runs rare), smooth
    /// gradients (long runs, ZRL), flat (DC only), at sides that are and are not whole MCUs.
    fn pictures() -> Vec<(u16, Vec<u8>)> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut out = Vec::new();
        for side in [256u16, 40, 13] {
            let n = usize::from(side);
            out.push((side, (0..3 * n * n).map(|_| next() as u8).collect()));
            out.push((
                side,
                (0..3 * n * n)
                    .map(|i| ((i / 3 % n + i / 3 / n) * 255 / (2 * n)) as u8 ^ (i % 3) as u8)
                    .collect(),
            ));
            out.push((side, vec![77u8; 3 * n * n]));
        }
        out
    }

    /// jpeg-encoder's forward DCT on AVX2 adds its rounding half before the last shift of rows
    /// 0 and 4 only in even columns (its constant is set as 32-bit lanes of 16-bit words); its
    /// portable code rounds every column, as libjpeg. With that rounding, cm3's encoder writes
    /// jpeg-encoder's JPEG byte for byte (headers, tables, quantisation, point-sampled 4:2:0,
    /// padding, Huffman coding and byte stuffing), at qualities 50 to 100, 4:2:0 and 4:4:4.
    #[test]
    fn writes_what_jpeg_encoder_writes() {
        #[cfg(target_arch = "x86_64")]
        let avx2 = std::arch::is_x86_feature_detected!("avx2");
        #[cfg(not(target_arch = "x86_64"))]
        let avx2 = false;
        let rounding = if avx2 {
            [2, 0, 2, 0, 2, 0, 2, 0]
        } else {
            ROUND_HALF
        };
        let mut checked = 0;
        for (side, pixels) in pictures() {
            for quality in [50u8, 90, 95, 100] {
                for subsampled in [true, false] {
                    let mut t = Template::new(side, quality, subsampled).expect("template");
                    for q in &mut t.quant {
                        q.even_round = rounding;
                    }
                    let ours = encode_with(&pixels, usize::from(side), &t);
                    let expected = theirs(&pixels, side, quality, subsampled);
                    assert!(
                        ours == expected,
                        "side {side} quality {quality} 4:2:0 {subsampled}: {} against {} bytes",
                        ours.len(),
                        expected.len()
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 72);
    }

    /// With libjpeg's rounding (what ingest uses), the JPEGs decode to the pixels of
    /// jpeg-encoder's within a rounding: 45 dB or more (49.5 at worst, noise at quality 50); flat ones are the same
    /// bytes.
    #[test]
    fn libjpeg_rounding_decodes_to_jpeg_encoders_pixels() {
        for (side, pixels) in pictures() {
            let flat = pixels.iter().all(|&v| v == pixels[0]);
            for quality in [50u8, 95] {
                let ours = encode_ycbcr(&pixels, side, quality, true).expect("ours");
                let expected = theirs(&pixels, side, quality, true);
                if flat {
                    assert_eq!(ours, expected);
                    continue;
                }
                let decode = |j: &[u8]| image::load_from_memory(j).expect("decodes").to_rgb8();
                let (a, b) = (decode(&ours), decode(&expected));
                let mse = a
                    .as_raw()
                    .iter()
                    .zip(b.as_raw())
                    .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
                    .sum::<f64>()
                    / a.as_raw().len() as f64;
                let psnr = 10.0 * (255.0f64.powi(2) / mse.max(1e-12)).log10();
                assert!(psnr >= 45.0, "side {side} quality {quality}: {psnr:.1} dB");
            }
        }
    }

    /// libjpeg's `jpeg_fdct_islow` on two blocks (the vectors jpeg-encoder tests its port with).
    #[test]
    fn forward_dct_is_libjpegs() {
        const INPUT1: [i32; 64] = [
            -70, -71, -70, -68, -67, -67, -67, -67, -72, -73, -72, -70, -69, -69, -68, -69, -75,
            -76, -74, -73, -73, -72, -71, -70, -77, -78, -77, -75, -76, -75, -73, -71, -78, -77,
            -77, -76, -79, -77, -76, -75, -78, -78, -77, -77, -77, -77, -78, -77, -79, -79, -78,
            -78, -78, -78, -79, -78, -80, -79, -78, -78, -81, -80, -78, -76,
        ];
        const OUTPUT1: [i32; 64] = [
            -4786, -66, 2, -18, 12, 12, 5, -7, 223, -37, -8, 21, 8, 5, -4, 6, 60, 6, -10, 5, 0, -2,
            -1, 5, 21, 21, -15, 12, -2, -7, 1, 0, -2, -5, 16, -15, 0, 5, -4, -8, 0, -7, -4, 6, 7,
            -4, 5, 4, 3, 0, 1, -5, 0, -1, 4, 1, -5, 7, 0, -3, -6, 1, 1, -4,
        ];
        const INPUT2: [i32; 64] = [
            21, 28, 11, 24, -45, -37, -55, -103, 38, -8, 31, 17, -19, 49, 15, -76, 22, -48, -36,
            -31, -23, 35, -23, -72, 13, -30, -45, -42, -44, -15, -20, -44, 13, -30, -45, -42, -44,
            -15, -20, -44, 13, -30, -45, -42, -44, -15, -20, -44, 13, -30, -45, -42, -44, -15, -20,
            -44, 13, -30, -45, -42, -44, -15, -20, -44,
        ];
        const OUTPUT2: [i32; 64] = [
            -1420, 717, 187, 910, -244, 579, 222, -191, 461, 487, -497, -29, -220, 179, 63, -95,
            213, 414, -235, -187, -108, 74, -73, -70, -63, 311, 13, -290, 17, -38, -180, -47, -254,
            201, 116, -247, 102, -109, -185, -36, -310, 107, 73, -91, 126, -121, -99, -37, -253,
            43, -15, 53, 101, -91, -3, -37, -136, 12, -44, 81, 53, -45, 31, -24,
        ];
        for (input, output) in [(INPUT1, OUTPUT1), (INPUT2, OUTPUT2)] {
            let columns: [Lanes; 8] =
                std::array::from_fn(|x| std::array::from_fn(|y| input[8 * y + x]));
            let coef = fdct(&columns, &ROUND_HALF);
            let flat: Vec<i32> = coef.iter().flatten().copied().collect();
            assert_eq!(flat, output);
        }
    }

    #[test]
    fn refuses_pixels_of_the_wrong_size() {
        assert!(encode_ycbcr(&[0; 10], 4, 90, true).is_err());
        assert!(encode_ycbcr(&[], 0, 90, true).is_err());
    }
}
