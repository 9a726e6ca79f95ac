//! The `rust-dct` JPEG codec's decoder: cm3's own decoder for baseline JPEGs, scaled in the DCT
//! per component, as libjpeg does when asked for a smaller output, or at full size.
//!
//! Each component gets the inverse DCT size that brings it to the same resolution: at 1/2 the
//! luma blocks of a 4:2:0 JPEG are inverse-transformed to 4 x 4 pixels and its chroma blocks to
//! 8 x 8, so colour needs no upsampling and keeps all the resolution the file stored. Only the
//! Huffman decoding covers every coefficient; the inverse DCT and the resize run on a quarter of
//! the pixels or fewer, and the pixels stay YCbCr up to the encoder. A JPEG too small to scale
//! (shorter side under 3 x `image_size`) is decoded at full size, its subsampled chroma
//! upsampled with libjpeg's triangle filter, as the general decoder does; it too stays YCbCr.
//!
//! Only what this decoder handles completely is decoded here: 8-bit baseline (or extended
//! sequential Huffman) JPEGs, grey or YCbCr, one interleaved scan, luma sampled at most twice
//! the chroma each way. Anything else (progressive, arithmetic, CMYK or RGB, 12-bit, several
//! scans, a stream that breaks off or is corrupt) returns `None`, and the general decoder
//! decodes it exactly as the `rust` codec does, with its own errors.

use std::cell::RefCell;
use std::rc::Rc;

use image::metadata::Orientation;

use super::scaled::upright;
use super::{Decoded, Rejection, check_pixels};
use crate::config::IngestConfig;

/// Bits looked up at once in the Huffman tables.
const LOOKUP_BITS: u32 = 10;

/// Bits looked up at once in an AC table's `fast` table: up to two whole symbols.
const FAST_BITS: u32 = 11;

/// Natural (row-major) position of the k-th coefficient in zig-zag order.
pub(super) const UNZIGZAG: [usize; 64] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
];

/// Rows and columns of the block covered by the zig-zag positions up to each index.
const ZIGZAG_EXTENT: [(usize, usize); 64] = {
    let mut extent = [(0, 0); 64];
    let (mut rows, mut cols) = (0, 0);
    let mut k = 0;
    while k < 64 {
        let (r, c) = (UNZIGZAG[k] / 8 + 1, UNZIGZAG[k] % 8 + 1);
        if r > rows {
            rows = r;
        }
        if c > cols {
            cols = c;
        }
        extent[k] = (rows, cols);
        k += 1;
    }
    extent
};

/// How much larger than `image_size` the scaled shorter side stays: 3/2, so that the resize
/// still has room to filter what the DCT scaling lets through. Measured on the benchmark's
/// 2,400 images against the full decode (README, ingest quality): at 3/2 no image under 42 dB;
/// at 1 (just the output size), 125 of them under 40 dB and down to 32 dB.
const MIN_RATIO: (u64, u64) = (3, 2);

/// The DCT scale `n` (decoding at `n`/8, `n` in 1, 2, 4) for an image whose shorter side is
/// `short`: the smallest whose scaled shorter side is still at least 1.5 x `side`. `None` when
/// even 1/2 would fall below that: the image is decoded at full size. (Other eighths
/// measured worse: 3/8, 5/8 and 6/8 scaling gave lower PSNR at the same final ratio.)
pub(super) fn dct_scale_for(short: u32, side: u32) -> Option<u32> {
    // Exact on the picture's extent (short * n / 8 >= side * 3/2), not the rounded-up count.
    let (short, side) = (u64::from(short), u64::from(side));
    let (num, den) = MIN_RATIO;
    [1, 2, 4]
        .into_iter()
        .find(|&n| short * u64::from(n) * den >= 8 * side * num)
}

/// A Huffman table: a direct lookup of the first `LOOKUP_BITS` bits, the canonical code's
/// limits for longer codes, and (for AC tables) run, value and length of a whole coefficient
/// when code and value fit in the lookup together.
struct Huffman {
    /// `length << 8 | symbol`, 0 when the code is longer than `LOOKUP_BITS`.
    lookup: [u16; 1 << LOOKUP_BITS],
    /// For AC tables, the symbols that the next `FAST_BITS` bits hold whole (code and value
    /// bits): the first a coefficient, ZRL or end of block; when the first is a coefficient, a
    /// second one, ZRL or end of block may follow. 0 when not even the first fits. Packed as
    /// `value2 << 24 | value1 << 16 | end of block << 13 | step2 << 8 | run1 << 4 | length`:
    /// values as `i8`, `step2` the zig-zag positions from the first coefficient to the second
    /// (0: no second), `length` the bits of all of it.
    fast: [u32; 1 << FAST_BITS],
    /// Largest code of each length (index 1..=16), -1 when none.
    max_code: [i32; 17],
    /// Index into `symbols` of a length's first code, minus that code.
    offset: [i32; 17],
    symbols: [u8; 256],
}

impl Huffman {
    /// From a DHT segment's 16 counts and symbols; `None` when the counts do not describe a
    /// prefix code.
    fn new(counts: &[u8; 16], symbols: &[u8]) -> Option<Box<Huffman>> {
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total > 256 || symbols.len() != total {
            return None;
        }
        let mut h = Box::new(Huffman {
            lookup: [0; 1 << LOOKUP_BITS],
            fast: [0; 1 << FAST_BITS],
            max_code: [-1; 17],
            offset: [0; 17],
            symbols: [0; 256],
        });
        h.symbols[..total].copy_from_slice(symbols);
        let mut code: i32 = 0;
        let mut k: usize = 0;
        for len in 1..=16usize {
            let count = usize::from(counts[len - 1]);
            h.offset[len] = k as i32 - code;
            for _ in 0..count {
                if code >= 1 << len {
                    return None;
                }
                if len as u32 <= LOOKUP_BITS {
                    let shift = LOOKUP_BITS - len as u32;
                    let first = (code as usize) << shift;
                    let entry = (len as u16) << 8 | u16::from(symbols[k]);
                    h.lookup[first..first + (1 << shift)].fill(entry);
                }
                code += 1;
                k += 1;
            }
            if count > 0 {
                h.max_code[len] = code - 1;
            }
            code <<= 1;
        }
        Some(h)
    }

    /// The symbol whose code starts the `avail` (at most `LOOKUP_BITS`) top bits of `bits`
    /// (an `avail`-bit number), and its code length; `None` when the code is longer.
    fn short_symbol(&self, bits: u32, avail: u32) -> Option<(u32, u8)> {
        let avail = avail.min(LOOKUP_BITS);
        let e = self.lookup[(bits << (LOOKUP_BITS - avail)) as usize & ((1 << LOOKUP_BITS) - 1)];
        let len = u32::from(e >> 8);
        (len != 0 && len <= avail).then_some((len, e as u8))
    }

    /// One AC symbol and its value bits at the top of the `avail` bits of `bits`: (run,
    /// value, bits used); value 0 for end of block (run 0) and ZRL (run 15). `None` when it
    /// does not fit or is not a valid AC symbol.
    fn short_ac(&self, bits: u32, avail: u32) -> Option<(u32, i32, u32)> {
        let (len, rs) = self.short_symbol(bits >> (avail - avail.min(LOOKUP_BITS)), avail)?;
        let (run, size) = (u32::from(rs >> 4), u32::from(rs & 15));
        if size == 0 {
            return matches!(run, 0 | 15).then_some((run, 0, len));
        }
        if len + size > avail {
            return None;
        }
        let raw = (bits >> (avail - len - size)) & ((1 << size) - 1);
        let value = extend(raw as i32, size);
        (-128..128)
            .contains(&value)
            .then_some((run, value, len + size))
    }

    /// Fill `fast` for a DC table: `difference << 8 | length` of a whole DC difference (code
    /// and value bits) in the next `FAST_BITS` bits; 0 when it does not fit.
    fn with_fast_dc(mut self: Box<Self>) -> Box<Self> {
        let mut fast = [0u32; 1 << FAST_BITS];
        for (p, slot) in fast.iter_mut().enumerate() {
            let p = p as u32;
            let Some((len, size)) = self.short_symbol(p >> (FAST_BITS - LOOKUP_BITS), LOOKUP_BITS)
            else {
                continue;
            };
            let size = u32::from(size);
            if size > 11 || len + size > FAST_BITS {
                continue;
            }
            let raw = (p >> (FAST_BITS - len - size)) & ((1 << size) - 1);
            *slot = ((extend(raw as i32, size) << 8) as u32) | (len + size);
        }
        self.fast = fast;
        self
    }

    /// Fill `fast` (an AC table's next one or two symbols in one lookup).
    fn with_fast_ac(mut self: Box<Self>) -> Box<Self> {
        let mut fast = [0u32; 1 << FAST_BITS];
        for (p, slot) in fast.iter_mut().enumerate() {
            let p = p as u32;
            let Some((run1, value1, len1)) = self.short_ac(p, FAST_BITS) else {
                continue;
            };
            let pack = |value2: i32, eob: u32, step2: u32, run1: u32, len: u32| {
                (value2 as u32) << 24
                    | (value1 as u32 & 0xFF) << 16
                    | eob << 13
                    | step2 << 8
                    | run1 << 4
                    | len
            };
            if value1 == 0 && run1 == 0 {
                // End of block first.
                *slot = pack(0, 1, 0, 0, len1);
                continue;
            }
            let rest = FAST_BITS - len1;
            *slot = match (rest > 0).then(|| self.short_ac(p & ((1 << rest) - 1), rest)) {
                Some(Some((0, 0, len2))) => pack(0, 1, 0, run1, len1 + len2),
                Some(Some((run2, value2, len2))) => pack(value2, 0, 1 + run2, run1, len1 + len2),
                _ => pack(0, 0, 0, run1, len1),
            };
        }
        self.fast = fast;
        self
    }
}

/// A built table, with its class and DHT definition.
type CachedTable = (u8, Vec<u8>, Rc<Huffman>);

/// How many built tables each thread keeps.
const CACHED_TABLES: usize = 8;

thread_local! {
    /// Tables built lately on this thread, by class and DHT definition (counts and symbols),
    /// most recent last. Most JPEGs carry the same few tables (the Annex K ones), and building
    /// the lookups for every image cost about 1% of an ingest.
    static TABLES: RefCell<Vec<CachedTable>> = const { RefCell::new(Vec::new()) };
}

/// The table (class 0: DC, 1: AC) a DHT definition (`def`: 16 counts, then the symbols)
/// describes, with its lookups; `None` when it is not a prefix code.
fn cached_table(class: u8, def: &[u8]) -> Option<Rc<Huffman>> {
    TABLES.with(|cache| {
        let mut cache = cache.borrow_mut();
        if let Some(at) = cache.iter().position(|(c, d, _)| *c == class && d == def) {
            let hit = cache.remove(at);
            let table = Rc::clone(&hit.2);
            cache.push(hit);
            return Some(table);
        }
        let counts: [u8; 16] = def.get(..16)?.try_into().ok()?;
        let table = Huffman::new(&counts, &def[16..])?;
        let table: Rc<Huffman> = Rc::from(if class == 0 {
            table.with_fast_dc()
        } else {
            table.with_fast_ac()
        });
        if cache.len() == CACHED_TABLES {
            cache.remove(0);
        }
        cache.push((class, def.to_vec(), Rc::clone(&table)));
        Some(table)
    })
}

/// A coefficient's value from its `size` raw bits (JPEG's EXTEND).
#[inline(always)]
fn extend(v: i32, size: u32) -> i32 {
    if size == 0 {
        0
    } else if v < 1 << (size - 1) {
        v - (1 << size) + 1
    } else {
        v
    }
}

/// The entropy-coded bits of a scan, top-aligned in a 64-bit buffer. Byte stuffing is undone;
/// at a marker (or the end of the data) zeros are fed, and counted, so that a stream that
/// breaks off is noticed rather than decoded as zeros.
#[derive(Clone, Copy)]
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    n: u32,
    /// Zero bits fed past a marker or the end.
    padding: u32,
}

impl Bits<'_> {
    /// At least 57 bits in the buffer afterwards.
    #[inline(always)]
    fn refill(&mut self) {
        if self.padding == 0
            && let Some(chunk) = self.data.get(self.pos..self.pos + 8)
        {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            let w = u64::from_be_bytes(word);
            // No 0xFF byte among the eight: take whole bytes at once.
            let ff = !w;
            if (ff.wrapping_sub(0x0101_0101_0101_0101) & !ff & 0x8080_8080_8080_8080) == 0 {
                let take = (64 - self.n) / 8;
                let end = self.n + take * 8;
                let keep = u64::MAX.checked_shr(end).map_or(u64::MAX, |low| !low);
                self.buf |= (w >> self.n) & keep;
                self.n = end;
                self.pos += take as usize;
                return;
            }
        }
        self.refill_bytewise();
    }

    #[inline(always)]
    fn refill_bytewise(&mut self) {
        while self.n <= 56 {
            let byte = if self.padding > 0 {
                None
            } else {
                match self.data.get(self.pos) {
                    Some(0xFF) => match self.data.get(self.pos + 1) {
                        Some(0x00) => {
                            self.pos += 2;
                            Some(0xFF)
                        }
                        // A marker (or the end): fed zeros from here on.
                        _ => None,
                    },
                    Some(&b) => {
                        self.pos += 1;
                        Some(b)
                    }
                    None => None,
                }
            };
            let b = match byte {
                Some(b) => b,
                None => {
                    self.padding = self.padding.saturating_add(8);
                    0
                }
            };
            self.buf |= u64::from(b) << (56 - self.n);
            self.n += 8;
        }
    }

    #[inline(always)]
    fn peek(&self, bits: u32) -> u32 {
        (self.buf >> (64 - bits)) as u32
    }

    #[inline(always)]
    fn consume(&mut self, bits: u32) {
        self.buf <<= bits;
        self.n -= bits;
    }

    /// `size` (0..=16) raw bits as a coefficient value. Needs `size` bits in the buffer.
    #[inline(always)]
    fn receive(&mut self, size: u32) -> i32 {
        if size == 0 {
            return 0;
        }
        let v = self.peek(size) as i32;
        self.consume(size);
        extend(v, size)
    }

    /// One Huffman symbol; needs 16 bits in the buffer. `None` for a code the table lacks.
    #[inline(always)]
    fn symbol(&mut self, h: &Huffman) -> Option<u8> {
        let e = h.lookup[self.peek(LOOKUP_BITS) as usize];
        if e != 0 {
            self.consume(u32::from(e >> 8));
            return Some(e as u8);
        }
        self.symbol_long(h)
    }

    #[inline(always)]
    fn symbol_long(&mut self, h: &Huffman) -> Option<u8> {
        let code16 = self.peek(16) as i32;
        for len in LOOKUP_BITS as usize + 1..=16 {
            let code = code16 >> (16 - len);
            if code <= h.max_code[len] {
                self.consume(len as u32);
                return h.symbols.get((h.offset[len] + code) as usize).copied();
            }
        }
        None
    }

    /// Bits past the data consumed: the stream broke off (or a marker came too early).
    #[inline(always)]
    fn overran(&self) -> bool {
        self.padding > self.n
    }

    /// Did the entropy-coded segment end where the blocks did? Less than a byte of padding left
    /// unread, and the next bytes a marker (after any fill bytes). Anything else means the
    /// blocks were decoded out of step with the data: corrupt.
    fn at_segment_end(&self) -> bool {
        if self.overran() || self.n - self.padding >= 8 {
            return false;
        }
        let mut at = self.pos;
        while self.data.get(at) == Some(&0xFF) && self.data.get(at + 1) == Some(&0xFF) {
            at += 1;
        }
        self.data.get(at) == Some(&0xFF) && !matches!(self.data.get(at + 1), None | Some(0x00))
    }

    /// At a restart interval's end: check the segment ended there, and step over the marker,
    /// which must be RST`expected` (0..=7). `None` otherwise. By value, so that the reader's
    /// state stays in registers while blocks are decoded.
    #[inline(never)]
    fn restart(mut self, expected: u8) -> Option<Self> {
        if !self.at_segment_end() {
            return None;
        }
        while self.data.get(self.pos + 1) == Some(&0xFF) {
            self.pos += 1;
        }
        if self.data.get(self.pos + 1) != Some(&(0xD0 + expected)) {
            return None;
        }
        self.pos += 2;
        self.buf = 0;
        self.n = 0;
        self.padding = 0;
        Some(self)
    }
}

/// A frame component and what this decoder does with it.
#[derive(Clone, Copy)]
struct Component {
    id: u8,
    h: usize,
    v: usize,
    quant: usize,
    dc_table: usize,
    ac_table: usize,
    /// Inverse DCT output size of one block (width, height), each 1, 2, 4 or 8.
    out_w: usize,
    out_h: usize,
}

/// Everything read from the markers up to the first scan's data.
struct Header<'a> {
    width: u32,
    height: u32,
    components: Vec<Component>,
    quant: [[u16; 64]; 4],
    dc: [Option<Rc<Huffman>>; 4],
    ac: [Option<Rc<Huffman>>; 4],
    restart_interval: usize,
    exif: Option<&'a [u8]>,
    /// Where the entropy-coded data of the (only) scan starts.
    scan_start: usize,
    /// The components (indices into `components`) in the scan's order, which is the order of
    /// their blocks in an MCU.
    scan_order: Vec<usize>,
    adobe_transform: Option<u8>,
}

/// The big-endian 16-bit number at `at`.
pub(super) fn be16(data: &[u8], at: usize) -> Option<usize> {
    Some(usize::from(u16::from_be_bytes([
        *data.get(at)?,
        *data.get(at + 1)?,
    ])))
}

/// Read the markers up to the first scan. `None` for anything this decoder leaves to the
/// general one.
fn read_header(data: &[u8]) -> Option<Header<'_>> {
    if data.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut hd = Header {
        width: 0,
        height: 0,
        components: Vec::new(),
        quant: [[0; 64]; 4],
        dc: [None, None, None, None],
        ac: [None, None, None, None],
        restart_interval: 0,
        exif: None,
        scan_start: 0,
        scan_order: Vec::new(),
        adobe_transform: None,
    };
    let mut seen_quant = [false; 4];
    let mut i = 2;
    loop {
        if *data.get(i)? != 0xFF {
            return None;
        }
        let marker = *data.get(i + 1)?;
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let len = be16(data, i + 2)?;
        if len < 2 {
            return None;
        }
        let seg = data.get(i + 4..i + 2 + len)?;
        match marker {
            // Baseline and extended sequential, Huffman-coded.
            0xC0 | 0xC1 => {
                if *seg.first()? != 8 || !hd.components.is_empty() {
                    return None;
                }
                hd.height = be16(seg, 1)? as u32;
                hd.width = be16(seg, 3)? as u32;
                let n = usize::from(*seg.get(5)?);
                if !(n == 1 || n == 3) || seg.len() != 6 + 3 * n {
                    return None;
                }
                for c in 0..n {
                    let at = 6 + 3 * c;
                    let hv = seg[at + 1];
                    let quant = usize::from(seg[at + 2]);
                    if quant > 3 {
                        return None;
                    }
                    hd.components.push(Component {
                        id: seg[at],
                        h: usize::from(hv >> 4),
                        v: usize::from(hv & 15),
                        quant,
                        dc_table: 0,
                        ac_table: 0,
                        out_w: 0,
                        out_h: 0,
                    });
                }
            }
            // Any other frame type (progressive, lossless, arithmetic, hierarchical), and the
            // hierarchical markers DHP and EXP.
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF | 0xDE | 0xDF => return None,
            0xC4 => {
                let mut s = seg;
                while !s.is_empty() {
                    let tc_th = s[0];
                    let (class, id) = (tc_th >> 4, usize::from(tc_th & 15));
                    let counts: [u8; 16] = s.get(1..17)?.try_into().ok()?;
                    let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
                    let def = s.get(1..17 + total)?;
                    if id > 3 || class > 1 {
                        return None;
                    }
                    let table = cached_table(class, def)?;
                    if class == 0 {
                        hd.dc[id] = Some(table);
                    } else {
                        hd.ac[id] = Some(table);
                    }
                    s = &s[17 + total..];
                }
            }
            0xDB => {
                let mut s = seg;
                while !s.is_empty() {
                    let (precision, id) = (s[0] >> 4, usize::from(s[0] & 15));
                    if id > 3 || precision > 1 {
                        return None;
                    }
                    let size = if precision == 0 { 64 } else { 128 };
                    let values = s.get(1..1 + size)?;
                    for (k, &nat) in UNZIGZAG.iter().enumerate() {
                        hd.quant[id][nat] = if precision == 0 {
                            u16::from(values[k])
                        } else {
                            u16::from_be_bytes([values[2 * k], values[2 * k + 1]])
                        };
                    }
                    seen_quant[id] = true;
                    s = &s[1 + size..];
                }
            }
            0xDD => hd.restart_interval = be16(seg, 0)?,
            0xE1 if seg.starts_with(b"Exif\0\0") && hd.exif.is_none() => {
                hd.exif = Some(&seg[6..]);
            }
            0xEE if seg.starts_with(b"Adobe") => hd.adobe_transform = seg.get(11).copied(),
            0xDA => {
                let n = usize::from(*seg.first()?);
                if hd.components.is_empty() || n != hd.components.len() || seg.len() != 4 + 2 * n {
                    return None;
                }
                for k in 0..n {
                    let (id, tables) = (*seg.get(1 + 2 * k)?, *seg.get(2 + 2 * k)?);
                    let at = hd.components.iter().position(|c| c.id == id)?;
                    if hd.scan_order.contains(&at) {
                        return None;
                    }
                    hd.scan_order.push(at);
                    let c = &mut hd.components[at];
                    c.dc_table = usize::from(tables >> 4);
                    c.ac_table = usize::from(tables & 15);
                }
                let tail = seg.get(1 + 2 * n..4 + 2 * n)?;
                // Baseline spectral selection and no successive approximation.
                if tail != [0, 63, 0] {
                    return None;
                }
                for c in &hd.components {
                    if c.dc_table > 3
                        || c.ac_table > 3
                        || hd.dc[c.dc_table].is_none()
                        || hd.ac[c.ac_table].is_none()
                        || !seen_quant[c.quant]
                    {
                        return None;
                    }
                }
                hd.scan_start = i + 2 + len;
                return Some(hd);
            }
            // EOI or a marker without a length before the scan: not ours.
            0xD8 | 0xD9 | 0x01 | 0xD0..=0xD7 => return None,
            _ => {}
        }
        i += 2 + len;
    }
}

/// The inverse DCT basis from 8 coefficients to `k` samples (1, 2, 4 or 8): `a[x][u]` =
/// (1/2) C(u) cos((2x + 1) u pi / 2k) for u < k. A block keeps its level and each kept
/// frequency its amplitude: the same cosines sampled at `k` points instead of 8, as libjpeg's
/// scaled inverse DCTs do; the higher frequencies are dropped.
fn basis(k: usize) -> [[f32; 8]; 8] {
    let mut a = [[0f32; 8]; 8];
    for (x, row) in a.iter_mut().enumerate().take(k) {
        for (u, v) in row.iter_mut().enumerate().take(k) {
            let c = if u == 0 {
                std::f64::consts::FRAC_1_SQRT_2
            } else {
                1.0
            };
            let angle = (2 * x + 1) as f64 * u as f64 * std::f64::consts::PI / (2 * k) as f64;
            *v = (0.5 * c * angle.cos()) as f32;
        }
    }
    a
}

/// The bases, computed once (their cosines are the same for every image).
static BASES: std::sync::LazyLock<Bases> = std::sync::LazyLock::new(Bases::new);

/// The bases for 0 to 8 samples (only 1, 2, 4 and 8 used), also transposed (`[u][x]`) for the
/// row pass.
struct Bases {
    by_size: [[[f32; 8]; 8]; 9],
    transposed: [[[f32; 8]; 8]; 9],
}

impl Bases {
    fn new() -> Bases {
        let by_size: [[[f32; 8]; 8]; 9] = std::array::from_fn(basis);
        let transposed = by_size.map(|a| {
            let mut t = [[0f32; 8]; 8];
            for (x, row) in a.iter().enumerate() {
                for (u, &v) in row.iter().enumerate() {
                    t[u][x] = v;
                }
            }
            t
        });
        Bases {
            by_size,
            transposed,
        }
    }
}

/// A sample clamped to 0..=255 and rounded to nearest (ties to even). Adding 1.5 x 2^23 leaves
/// the integer in the low mantissa bits: this vectorises where a float-to-int cast does not.
/// (`max` then `min` rather than `clamp`: measured faster here.)
#[inline(always)]
#[allow(clippy::manual_clamp)]
fn to_u8(v: f32) -> u8 {
    (v.max(0.0).min(255.0) + 12_582_912.0).to_bits() as u8
}

/// Inverse DCT of one block's coefficients `coef` (natural order, dequantised by `quant`) to `ow` x `oh`
/// samples of `out`, one channel's plane with row stride `stride` bytes.
/// Level-shifted, rounded and clamped. Only the first `rows` x `cols` coefficients may be
/// non-zero (most blocks end early in zig-zag order), so only they are read. All 8 lanes are
/// computed whatever `ow`: one vector.
#[inline(always)]
fn idct(
    coef: &[i32; 64],
    quant: &[f32; 64],
    (rows, cols): (usize, usize),
    size: (usize, usize),
    bases: &Bases,
    out: &mut [u8],
    stride: usize,
) {
    let (ow, oh) = size;
    let (rows, cols) = (rows.min(oh).min(8), cols.min(ow).min(8));
    // Rows and columns rounded up to 1, 2, 4 or 8, so that each case is a transform of fixed
    // size, unrolled. The coefficients added are zeros: the same sums, the same bytes.
    match (rows.next_power_of_two(), cols.next_power_of_two()) {
        (1, 1) => idct_fixed::<1, 1>(coef, quant, size, bases, out, stride),
        (1, 2) => idct_fixed::<1, 2>(coef, quant, size, bases, out, stride),
        (1, 4) => idct_fixed::<1, 4>(coef, quant, size, bases, out, stride),
        (1, _) => idct_fixed::<1, 8>(coef, quant, size, bases, out, stride),
        (2, 1) => idct_fixed::<2, 1>(coef, quant, size, bases, out, stride),
        (2, 2) => idct_fixed::<2, 2>(coef, quant, size, bases, out, stride),
        (2, 4) => idct_fixed::<2, 4>(coef, quant, size, bases, out, stride),
        (2, _) => idct_fixed::<2, 8>(coef, quant, size, bases, out, stride),
        (4, 1) => idct_fixed::<4, 1>(coef, quant, size, bases, out, stride),
        (4, 2) => idct_fixed::<4, 2>(coef, quant, size, bases, out, stride),
        (4, 4) => idct_fixed::<4, 4>(coef, quant, size, bases, out, stride),
        (4, _) => idct_fixed::<4, 8>(coef, quant, size, bases, out, stride),
        (_, 1) => idct_fixed::<8, 1>(coef, quant, size, bases, out, stride),
        (_, 2) => idct_fixed::<8, 2>(coef, quant, size, bases, out, stride),
        (_, 4) => idct_fixed::<8, 4>(coef, quant, size, bases, out, stride),
        (_, _) => idct_fixed::<8, 8>(coef, quant, size, bases, out, stride),
    }
}

/// `idct` over the first `R` x `C` coefficients.
#[inline(always)]
fn idct_fixed<const R: usize, const C: usize>(
    coef: &[i32; 64],
    quant: &[f32; 64],
    (ow, oh): (usize, usize),
    bases: &Bases,
    out: &mut [u8],
    stride: usize,
) {
    let aw = &bases.transposed[ow];
    let ah = &bases.by_size[oh];
    // Rows: t[v][x] = sum over u of F[v][u] a_w[x][u].
    let mut t = [[0f32; 8]; R];
    for (v, tv) in t.iter_mut().enumerate() {
        for (u, au) in aw.iter().enumerate().take(C) {
            let f = coef[8 * v + u] as f32 * quant[8 * v + u];
            for x in 0..8 {
                tv[x] += f * au[x];
            }
        }
    }
    // Columns: out[y][x] = sum over v of a_h[y][v] t[v][x].
    for (y, ahy) in ah.iter().enumerate().take(oh) {
        let mut acc = [128f32; 8];
        for (tv, &a) in t.iter().zip(ahy) {
            for x in 0..8 {
                acc[x] += a * tv[x];
            }
        }
        // All 8 lanes are written whatever `ow`: one vector store into the plane (a store per
        // lane into interleaved pixels cost more than the transform). Lanes past `ow` land on
        // the next block to the right, written after this one, or in the plane's right margin.
        let row = &mut out[y * stride..y * stride + 8];
        for x in 0..8 {
            row[x] = to_u8(acc[x]);
        }
    }
}

/// Decode one block's coefficients into `block` (quantised, natural order; `block` is all
/// zeros before). Returns the zig-zag index of the last coefficient decoded (0: only DC),
/// `None` for a corrupt block. Every coefficient is stored, kept or not: one store is cheaper
/// than asking, and the inverse DCT reads only what it keeps.
#[inline(always)]
fn decode_block(
    bits: &mut Bits<'_>,
    (dc, ac): (&Huffman, &Huffman),
    pred: &mut i32,
    block: &mut [i32; 64],
) -> Option<usize> {
    if bits.n < 32 {
        bits.refill();
    }
    let e = dc.fast[bits.peek(FAST_BITS) as usize];
    let diff = if e != 0 {
        bits.consume(e & 0xFF);
        (e as i32) >> 8
    } else {
        let size = u32::from(bits.symbol(dc)?);
        if size > 11 {
            return None;
        }
        bits.receive(size)
    };
    *pred = pred.wrapping_add(diff);
    block[0] = *pred;
    let mut k = 1;
    loop {
        if bits.n < 32 {
            bits.refill();
        }
        let e = ac.fast[bits.peek(FAST_BITS) as usize];
        let k1 = k + ((e >> 4) & 15) as usize;
        // A symbol that would fill position 63 takes the general path, which stops there: the
        // bits after a block's last position belong to the next block.
        if e != 0 && k1 < 63 {
            bits.consume(e & 15);
            // Branch-free: the second value (0 when there is none: the position is still
            // empty) is stored first, so that the first overwrites it when they are the same
            // position. Past 63 only in a corrupt block, which the check below gives up.
            let k2 = k1 + ((e >> 8) & 31) as usize;
            block[UNZIGZAG[k2 & 63]] = (e as i32) >> 24;
            block[UNZIGZAG[k1]] = ((e << 8) as i32) >> 24;
            if e & (1 << 13) != 0 {
                // End of block: after the first (or instead of it, when that is a lone end of
                // block: no value and no run).
                return Some(if e & 0x00FF_00F0 == 0 { k - 1 } else { k1 });
            }
            k = k2;
        } else {
            let rs = bits.symbol(ac)?;
            let (run, size) = (usize::from(rs >> 4), u32::from(rs & 15));
            if size == 0 {
                if run != 15 {
                    // End of block.
                    return Some(k - 1);
                }
                k += 16;
                if k >= 64 {
                    return (k == 64).then_some(63);
                }
                continue;
            }
            k += run;
            block[UNZIGZAG[k & 63]] = bits.receive(size);
        }
        if k >= 63 {
            return (k == 63).then_some(63);
        }
        k += 1;
    }
}

/// Three planes of equal size into `out`, 3 bytes a pixel.
#[inline(always)]
fn interleave(y: &[u8], cb: &[u8], cr: &[u8], out: &mut [u8]) {
    for (((px, &y), &cb), &cr) in out.chunks_exact_mut(3).zip(y).zip(cb).zip(cr) {
        px[0] = y;
        px[1] = cb;
        px[2] = cr;
    }
}

/// Full-size planes (luma first, at full resolution; chroma subsampled by `factors`, 1 or 2
/// each way) upsampled and interleaved into `out`: `width` (the planes' width and an 8-pixel
/// margin) x `height` pixels. The upsampling is libjpeg's "fancy" triangle filter, which the
/// general decoder (zune-jpeg) also uses: each output sample weighs the nearest stored sample
/// 3/4 and the next 1/4 along each subsampled axis, edges repeated.
#[inline(always)]
fn upsample_interleave(
    planes: &[Vec<u8>; 3],
    sizes: &[(usize, usize)],
    factors: &[(usize, usize)],
    (width, height): (usize, usize),
    (kept_x, kept_y): (std::ops::Range<usize>, std::ops::Range<usize>),
    out: &mut Vec<u8>,
) {
    let luma_w = sizes[0].0;
    // Only the kept columns (whole MCUs, so whole chroma samples) and rows are computed; the
    // rest of `out` stays zero, never read.
    let (x0, x1) = (kept_x.start.min(luma_w), kept_x.end.min(luma_w));
    let kept_w = x1 - x0;
    let mut rows = [vec![0u8; kept_w], vec![0u8; kept_w]];
    let mut sums = vec![0u16; kept_w];
    let (mut even, mut odd) = (vec![0u8; kept_w], vec![0u8; kept_w]);
    for y in 0..height {
        let start = out.len();
        out.resize(start + 3 * width, 0);
        if !kept_y.contains(&y) || kept_w == 0 {
            continue;
        }
        for (k, row) in rows.iter_mut().enumerate() {
            let ci = k + 1;
            let (full_w, ph) = sizes[ci];
            let (fx, fy) = factors[ci];
            let plane = &planes[ci];
            // This component's kept columns.
            let (c0, c1) = (x0 / fx, x1 / fx);
            let pw = c1 - c0;
            // Vertical: 4 x the sample, or 3 x the nearest row + 1 x the next nearest. (Loops
            // over whole slices, written so that they vectorise.)
            let cy = y / fy;
            let this = &plane[cy * full_w + c0..cy * full_w + c1];
            let sums = &mut sums[..pw];
            if fy == 1 {
                for (s, &a) in sums.iter_mut().zip(this) {
                    *s = 4 * u16::from(a);
                }
            } else {
                let other = if y % 2 == 0 {
                    cy.saturating_sub(1)
                } else {
                    (cy + 1).min(ph - 1)
                };
                let near = &plane[other * full_w + c0..other * full_w + c1];
                for ((s, &a), &b) in sums.iter_mut().zip(this).zip(near) {
                    *s = 3 * u16::from(a) + u16::from(b);
                }
            }
            // Horizontal: the same between columns; rounded once, as libjpeg does: +8 and +7
            // (of 16) alternately after a vertical blend (4:2:0), +1 and +2 (of 4) without one
            // (4:2:2), so that rounding does not drift one way. (4:4:0 rounds +2 in both rows,
            // as zune-jpeg.)
            if fx == 1 {
                for (o, &s) in row.iter_mut().zip(sums.iter()) {
                    *o = ((4 * s + 8) >> 4) as u8;
                }
                continue;
            }
            let (left_round, right_round) = if fy == 1 { (4, 8) } else { (8, 7) };
            let (even, odd) = (&mut even[..pw], &mut odd[..pw]);
            even[0] = ((4 * sums[0] + 8) >> 4) as u8;
            for ((e, &s), &left) in even[1..].iter_mut().zip(&sums[1..]).zip(&sums[..pw - 1]) {
                *e = ((3 * s + left + left_round) >> 4) as u8;
            }
            for ((o, &s), &right) in odd[..pw - 1]
                .iter_mut()
                .zip(&sums[..pw - 1])
                .zip(&sums[1..])
            {
                *o = ((3 * s + right + right_round) >> 4) as u8;
            }
            odd[pw - 1] = ((4 * sums[pw - 1] + right_round) >> 4) as u8;
            for ((pair, &e), &o) in row.chunks_exact_mut(2).zip(even.iter()).zip(odd.iter()) {
                pair[0] = e;
                pair[1] = o;
            }
        }
        let luma = &planes[0][y * luma_w + x0..y * luma_w + x1];
        interleave(luma, &rows[0], &rows[1], &mut out[start + 3 * x0..]);
    }
}

/// A decode (scaled or full size): YCbCr interleaved, 3 bytes a pixel, `width` x `height`
/// (whole MCUs and a margin, so a little more than the picture).
struct Planes {
    ycbcr: Vec<u8>,
    width: usize,
    height: usize,
}

/// Decode the scan at `n`/8 into interleaved YCbCr (grey: chroma 128). Compiled a second time
/// for AVX2 and BMI2 (the inverse DCT's vectors, the bit buffer's shifts), chosen at run time;
/// both compute the same bytes (Rust neither fuses nor reorders float operations).
fn decode_scan(data: &[u8], hd: &mut Header<'_>, n: usize, keep: &Kept) -> Option<Planes> {
    #[cfg(target_arch = "x86_64")]
    if avx2_bmi() {
        return simd::decode_scan_avx2(data, hd, n, keep);
    }
    decode_scan_body(data, hd, n, keep)
}

/// Whether this CPU has AVX2, BMI1 and BMI2: every feature the `simd` copies here and in the
/// encoder are compiled for (`target_feature(enable = "avx2,bmi1,bmi2")`).
#[cfg(target_arch = "x86_64")]
pub(super) fn avx2_bmi() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("bmi1")
        && std::arch::is_x86_feature_detected!("bmi2")
}

/// The decoded pixels (columns, rows, at the decode's scale) the resize can read: only blocks
/// there are inverse-transformed.
type Kept = (std::ops::Range<usize>, std::ops::Range<usize>);

#[cfg(target_arch = "x86_64")]
mod simd {
    #![allow(unsafe_code)]
    use super::{Header, Kept, Planes, decode_scan_body};

    #[target_feature(enable = "avx2,bmi1,bmi2")]
    fn decode_scan_avx2_inner(
        data: &[u8],
        hd: &mut Header<'_>,
        n: usize,
        keep: &Kept,
    ) -> Option<Planes> {
        decode_scan_body(data, hd, n, keep)
    }

    /// Only called after `avx2_bmi()` found AVX2, BMI1 and BMI2.
    pub(super) fn decode_scan_avx2(
        data: &[u8],
        hd: &mut Header<'_>,
        n: usize,
        keep: &Kept,
    ) -> Option<Planes> {
        // SAFETY: the caller checked that this CPU has every feature the function is compiled
        // for; that is the only requirement of calling a `target_feature` function.
        unsafe { decode_scan_avx2_inner(data, hd, n, keep) }
    }
}

#[inline(always)]
fn decode_scan_body(data: &[u8], hd: &mut Header<'_>, n: usize, keep: &Kept) -> Option<Planes> {
    let (w, h) = (hd.width as usize, hd.height as usize);
    let hmax = hd.components.iter().map(|c| c.h).max()?;
    let vmax = hd.components.iter().map(|c| c.v).max()?;
    // T.81 allows at most 10 blocks in an MCU.
    if hd.components.iter().map(|c| c.h * c.v).sum::<usize>() > 10 {
        return None;
    }
    for c in &mut hd.components {
        // Chroma at most halved each way (4:4:4, 4:2:2, 4:4:0, 4:2:0): at `n` <= 4 no block
        // needs more than 8 samples a side.
        if c.h == 0
            || c.v == 0
            || hmax % c.h != 0
            || vmax % c.v != 0
            || !matches!(hmax / c.h, 1 | 2)
            || !matches!(vmax / c.v, 1 | 2)
        {
            return None;
        }
        // At full size a subsampled component stays at its stored resolution (8 x 8 a block)
        // and is upsampled afterwards.
        c.out_w = (n * hmax / c.h).min(8);
        c.out_h = (n * vmax / c.v).min(8);
        if !matches!(c.out_w, 1 | 2 | 4 | 8) || !matches!(c.out_h, 1 | 2 | 4 | 8) {
            return None;
        }
    }
    // One component: a non-interleaved scan of its own blocks, whatever its sampling says.
    let single = hd.components.len() == 1;
    let (mcu_w, mcu_h) = if single { (8, 8) } else { (8 * hmax, 8 * vmax) };
    let (mcus_x, mcus_y) = (w.div_ceil(mcu_w), h.div_ceil(mcu_h));
    if single {
        let c = &mut hd.components[0];
        (c.h, c.v, c.out_w, c.out_h) = (1, 1, n, n);
    }
    // A margin of 8 pixels on the right, for the inverse DCT's whole-vector writes.
    let (width, height) = (mcus_x * mcu_w * n / 8 + 8, mcus_y * mcu_h * n / 8);
    let stride = 3 * width;
    let mut ycbcr = Vec::with_capacity(stride * height);
    // Usually a row of MCUs is decoded into one plane per component (the inverse DCT writes a
    // block row as one vector), then interleaved into `ycbcr`; grey has chroma 128. At full
    // size with subsampled chroma, every plane is kept whole for the upsampling, which needs
    // the chroma rows on both sides of a band's edge.
    let upsample = !single
        && hd
            .components
            .iter()
            .any(|c| c.out_w * c.h != n * hmax || c.out_h * c.v != n * vmax);
    if upsample && (hd.components[0].h, hd.components[0].v) != (hmax, vmax) {
        // Luma at less than the full resolution: not a layout this decoder takes.
        return None;
    }
    let band_h = mcu_h * n / 8;
    let plane_size = |c: &Component| {
        if upsample {
            (mcus_x * c.h * c.out_w, mcus_y * c.v * c.out_h)
        } else {
            (width, band_h)
        }
    };
    let sizes: Vec<(usize, usize)> = hd.components.iter().map(plane_size).collect();
    // The MCUs that cover the region the resize reads.
    let (mcu_px_w, mcu_px_h) = (mcu_w * n / 8, mcu_h * n / 8);
    let kept_mcus = |keep: &std::ops::Range<usize>, px: usize, count: usize| {
        (keep.start / px).min(count)..keep.end.div_ceil(px).min(count)
    };
    let mcu_cols = kept_mcus(&keep.0, mcu_px_w, mcus_x);
    let mcu_rows = kept_mcus(&keep.1, mcu_px_h, mcus_y);
    let mut bands: [Vec<u8>; 3] = std::array::from_fn(|ci| match sizes.get(ci) {
        Some(&(pw, ph)) => vec![0u8; pw * ph],
        None => vec![128u8; width * band_h],
    });
    let quant: Vec<[f32; 64]> = hd
        .components
        .iter()
        .map(|c| hd.quant[c.quant].map(f32::from))
        .collect();
    let mut tables = Vec::with_capacity(hd.components.len());
    for c in &hd.components {
        tables.push((hd.dc[c.dc_table].as_deref()?, hd.ac[c.ac_table].as_deref()?));
    }
    let bases = &*BASES;
    let mut bits = Bits {
        data,
        pos: hd.scan_start,
        buf: 0,
        n: 0,
        padding: 0,
    };
    let mut preds = [0i32; 3];
    let mut block = [0i32; 64];
    let mut left = hd.restart_interval;
    let mut next_restart = 0u8;
    for my in 0..mcus_y {
        // A stream that ran out (or hit a marker) is given up within a row of MCUs, not decoded
        // from zeros to the end of a large declared frame.
        if bits.overran() {
            return None;
        }
        let row_kept = mcu_rows.contains(&my);
        for mx in 0..mcus_x {
            let kept = row_kept && mcu_cols.contains(&mx);
            if hd.restart_interval > 0 {
                if left == 0 {
                    bits = bits.restart(next_restart)?;
                    next_restart = (next_restart + 1) % 8;
                    preds = [0; 3];
                    left = hd.restart_interval;
                }
                left -= 1;
            }
            for &ci in &hd.scan_order {
                let c = &hd.components[ci];
                let pw = sizes[ci].0;
                let top = if upsample { my * c.v } else { 0 };
                for by in 0..c.v {
                    for bx in 0..c.h {
                        let last = decode_block(&mut bits, tables[ci], &mut preds[ci], &mut block)?;
                        if !kept {
                            // Outside what the resize reads: decoded (the stream goes on), not
                            // transformed.
                            block = [0; 64];
                            continue;
                        }
                        let x = (mx * c.h + bx) * c.out_w;
                        let y = (top + by) * c.out_h;
                        let out = &mut bands[ci][y * pw + x..];
                        if last == 0 {
                            // Only DC: a flat block.
                            let level = to_u8(block[0] as f32 * quant[ci][0] / 8.0 + 128.0);
                            for row in 0..c.out_h {
                                out[row * pw..row * pw + c.out_w].fill(level);
                            }
                            block[0] = 0;
                            continue;
                        }
                        let (extent, size) = (ZIGZAG_EXTENT[last], (c.out_w, c.out_h));
                        idct(&block, &quant[ci], extent, size, bases, out, pw);
                        block = [0; 64];
                    }
                }
            }
        }
        if !upsample {
            // Into cache-resident new rows: no pass over a zeroed whole-image buffer first.
            let start = ycbcr.len();
            ycbcr.resize(start + band_h * stride, 0);
            if row_kept {
                interleave(&bands[0], &bands[1], &bands[2], &mut ycbcr[start..]);
            }
        }
    }
    if !bits.at_segment_end() {
        return None;
    }
    if upsample {
        let factors: Vec<(usize, usize)> = hd
            .components
            .iter()
            .map(|c| (hmax / c.h, vmax / c.v))
            .collect();
        let kept = (
            mcu_cols.start * mcu_w..mcu_cols.end * mcu_w,
            mcu_rows.start * mcu_h..mcu_rows.end * mcu_h,
        );
        let size = (width, height);
        upsample_interleave(&bands, &sizes, &factors, size, kept, &mut ycbcr);
    }
    // The margin holds what the inverse DCT wrote past the last blocks; the resize may read a
    // few pixels beyond the picture, so it gets the last decoded column instead.
    let last = 3 * (width - 9);
    for row in ycbcr.chunks_exact_mut(stride) {
        let (body, margin) = row.split_at_mut(last + 3);
        let px = [body[last], body[last + 1], body[last + 2]];
        for m in margin.chunks_exact_mut(3) {
            m.copy_from_slice(&px);
        }
    }
    Some(Planes {
        ycbcr,
        width,
        height,
    })
}

/// The part of a `w` x `h` picture decoded at `n`/8 that the resize to a `side` x `side`
/// centre square reads (columns, rows, in decoded pixels): the centred square (the same one
/// whatever the EXIF orientation) and, along the longer side, the filter's reach beyond it
/// (3 pixels of Lanczos3 at the resize's scale, the widest filter offered) and 8 pixels more
/// (the chroma upsampling's own reach, and rounding). Only the blocks there are
/// inverse-transformed: on the benchmark's photos about a quarter of the pixels lie outside.
fn kept_region((w, h): (u32, u32), n: u32, side: u32) -> Kept {
    let scale = f64::from(n) / 8.0;
    let (sw, sh) = (f64::from(w) * scale, f64::from(h) * scale);
    let short = sw.min(sh);
    let reach = 3.0 * (short / f64::from(side.max(1))).max(1.0) + 8.0;
    let half = short / 2.0 + reach;
    let around = |len: f64| {
        if len <= short {
            0..usize::MAX
        } else {
            let lo = (len / 2.0 - half).floor().max(0.0) as usize;
            lo..(len / 2.0 + half).ceil() as usize
        }
    };
    (around(sw), around(sh))
}

/// Decode a JPEG to YCbCr: scaled in the DCT per component when its shorter side is at least
/// 3 x `image_size`, at full size otherwise. `None` when the JPEG is anything this decoder does
/// not handle completely: the general decoder then decodes it, exactly as the `rust` codec
/// does.
pub(super) fn decode(data: &[u8], cfg: &IngestConfig) -> Result<Option<Decoded>, Rejection> {
    decode_keeping(data, cfg, false)
}

/// `decode`, with every block inverse-transformed when `everything` (for the tests).
fn decode_keeping(
    data: &[u8],
    cfg: &IngestConfig,
    everything: bool,
) -> Result<Option<Decoded>, Rejection> {
    let Some(mut hd) = read_header(data) else {
        return Ok(None);
    };
    let (w, h) = (hd.width, hd.height);
    if w == 0 || h == 0 {
        // A height given later (DNL) or none: the general decoder's case.
        return Ok(None);
    }
    // The pixel limit applies to the declared size, before anything is decoded.
    check_pixels(w, h, cfg)?;
    let n = dct_scale_for(w.min(h), cfg.image_size).unwrap_or(8);
    let rgb_components = hd.components.len() == 3
        && (hd.adobe_transform == Some(0) || hd.components.iter().map(|c| c.id).eq(*b"RGB"));
    if rgb_components {
        return Ok(None);
    }
    let keep = if everything {
        (0..usize::MAX, 0..usize::MAX)
    } else {
        kept_region((w, h), n, cfg.image_size)
    };
    let Some(planes) = decode_scan(data, &mut hd, n as usize, &keep) else {
        return Ok(None);
    };
    let (Ok(pw), Ok(ph)) = (u32::try_from(planes.width), u32::try_from(planes.height)) else {
        return Ok(None);
    };
    // EXIF orientation, read the same way as the general decoder; a broken block means none.
    let orientation = hd
        .exif
        .and_then(Orientation::from_exif_chunk)
        .unwrap_or(Orientation::NoTransforms);
    // The decoded buffer holds whole MCUs and a margin: padding right and below the picture.
    upright(planes.ycbcr, (pw, ph), (w, h), n, orientation, true).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes of a bit string (`bits` top-aligned) with JPEG byte stuffing, and zero bytes
    /// after it.
    fn stuffed(bits: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for b in bits.to_be_bytes() {
            out.push(b);
            if b == 0xFF {
                out.push(0);
            }
        }
        out.extend([0; 8]);
        out
    }

    /// One AC symbol and its value the general way (`symbol`, then `receive`): run, value and
    /// bits used; `None` for a code the table lacks or one longer than `LOOKUP_BITS`.
    fn one_symbol(bits: &mut Bits<'_>, h: &Huffman) -> Option<(u32, i32, u32)> {
        let before = bits.n;
        let rs = bits.symbol(h)?;
        // Codes longer than the lookup's reach have no entry (the general path decodes them).
        if before - bits.n > LOOKUP_BITS {
            return None;
        }
        let (run, size) = (u32::from(rs >> 4), u32::from(rs & 15));
        let value = bits.receive(size);
        Some((run, value, before - bits.n))
    }

    /// A JPEG with the tables jpeg-encoder writes (the Annex K tables): DC and AC, luma and
    /// chroma.
    fn real_jpeg() -> Vec<u8> {
        let img = image::RgbImage::from_fn(64, 64, |x, y| {
            image::Rgb([(x * 4) as u8, (y * 4) as u8, ((x ^ y) * 4) as u8])
        });
        let mut jpeg = Vec::new();
        jpeg_encoder::Encoder::new(&mut jpeg, 90)
            .encode(img.as_raw(), 64, 64, jpeg_encoder::ColorType::Rgb)
            .expect("encode");
        jpeg
    }

    /// A reader at the start of `p` (`FAST_BITS` bits) followed by `tail`.
    fn reader(p: u32, tail: u64, data: &mut Vec<u8>) -> Bits<'_> {
        *data = stuffed(u64::from(p) << (64 - FAST_BITS) | tail);
        let mut bits = Bits {
            data,
            pos: 0,
            buf: 0,
            n: 0,
            padding: 0,
        };
        bits.refill();
        bits
    }

    /// The table cache gives each definition its own table: 12 definitions of the same code
    /// lengths (more than the cache holds) asked for in turn, twice over, each time for both
    /// classes; every table returned has the symbols asked for, and a repeat is the same table.
    #[test]
    fn cached_tables_are_the_ones_defined() {
        let defs: Vec<Vec<u8>> = (0u8..12)
            .map(|k| {
                let mut def = vec![0, 2, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
                def.extend((0..6).map(|i| k * 6 + i));
                def
            })
            .collect();
        for round in 0..2 {
            for def in &defs {
                for class in [0, 1] {
                    let a = cached_table(class, def).expect("a prefix code");
                    assert_eq!(&a.symbols[..6], &def[16..], "round {round}");
                    let b = cached_table(class, def).expect("a prefix code");
                    assert!(Rc::ptr_eq(&a, &b), "a repeat hits the cache");
                }
            }
        }
        // Not a prefix code (3 codes of length 1): refused, not cached as anything.
        let bad = [3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3];
        assert!(cached_table(1, &bad).is_none());
        assert!(cached_table(1, &bad).is_none());
    }

    /// Transforming only the blocks the resize reads changes no output pixel: landscape and
    /// portrait, wide and nearly square, scaled and full size, 4:2:0 and 4:4:4, every filter.
    #[test]
    fn only_the_blocks_the_resize_reads_are_needed() {
        use crate::config::ResizeFilter;
        let img = image::RgbImage::from_fn(1203, 811, |x, y| {
            let v = (x * 7 + y * 13) ^ (x * y / 97);
            image::Rgb([v as u8, (v >> 3) as u8, (x + y) as u8])
        });
        let mut checked = 0;
        for (w, h) in [
            (1203, 811),
            (811, 1203),
            (1203, 400),
            (330, 1000),
            (700, 690),
        ] {
            let part = image::imageops::crop_imm(&img, 0, 0, w.min(1203), h.min(811)).to_image();
            let part = image::imageops::resize(&part, w, h, image::imageops::FilterType::Triangle);
            for sampling in [
                jpeg_encoder::SamplingFactor::F_2_2,
                jpeg_encoder::SamplingFactor::F_1_1,
            ] {
                let mut jpeg = Vec::new();
                let mut enc = jpeg_encoder::Encoder::new(&mut jpeg, 90);
                enc.set_sampling_factor(sampling);
                enc.encode(
                    part.as_raw(),
                    w as u16,
                    h as u16,
                    jpeg_encoder::ColorType::Rgb,
                )
                .expect("encode");
                for filter in [ResizeFilter::Lanczos3, ResizeFilter::Box] {
                    for side in [256, 128] {
                        let cfg = IngestConfig {
                            image_size: side,
                            resize_filter: filter,
                            ..IngestConfig::default()
                        };
                        let resized = |everything| {
                            let d = decode_keeping(&jpeg, &cfg, everything)
                                .expect("no error")
                                .expect("decoded");
                            let content = d.content.expect("content");
                            let size = (d.width, d.height);
                            super::super::resize_center_crop(d.rgb, size, content, side, filter)
                                .expect("resize")
                        };
                        assert!(
                            resized(false) == resized(true),
                            "{w} x {h} {sampling:?} {filter:?} {side}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 40);
    }

    /// Every entry of a DC table's lookup is the difference and length that decoding the
    /// symbol and then its value bits gives; empty only when they do not fit.
    #[test]
    fn fast_dc_entries_agree_with_decoding_the_symbol_then_its_bits() {
        let jpeg = real_jpeg();
        let hd = read_header(&jpeg).expect("header");
        let tables: Vec<&Huffman> = hd.dc.iter().flatten().map(|h| &**h).collect();
        assert_eq!(tables.len(), 2, "a luma and a chroma DC table");
        let (mut filled, mut empty) = (0, 0);
        for h in tables {
            for p in 0..1u32 << FAST_BITS {
                for tail in [0, u64::MAX >> FAST_BITS] {
                    let mut data = Vec::new();
                    let mut bits = reader(p, tail, &mut data);
                    let before = bits.n;
                    let size = bits.symbol(h).map(u32::from);
                    let code_len = before - bits.n;
                    let e = h.fast[p as usize];
                    match size {
                        Some(size) if code_len <= LOOKUP_BITS && code_len + size <= FAST_BITS => {
                            let diff = bits.receive(size);
                            assert_eq!(
                                ((e as i32) >> 8, e & 0xFF),
                                (diff, code_len + size),
                                "prefix {p:#b}"
                            );
                            filled += 1;
                        }
                        _ => {
                            assert_eq!(e, 0, "prefix {p:#b}");
                            empty += 1;
                        }
                    }
                }
            }
        }
        assert!(filled > 0 && empty > 0, "{filled} / {empty}");
    }

    /// Every entry of the two-symbol AC table says what decoding one symbol at a time says:
    /// for each 11-bit prefix (followed by ones or by zeros), the first symbol's run, value and
    /// length, and the second's, or end of block, exactly; an entry is empty only when the
    /// first symbol does not fit in the prefix with its value. On the tables a real encoder
    /// writes (jpeg-encoder's, the Annex K tables), luma and chroma.
    #[test]
    fn fast_ac_entries_agree_with_decoding_one_symbol_at_a_time() {
        let jpeg = real_jpeg();
        let hd = read_header(&jpeg).expect("header");
        let tables: Vec<&Huffman> = hd.ac.iter().flatten().map(|h| &**h).collect();
        assert_eq!(tables.len(), 2, "a luma and a chroma AC table");
        let mut counts = [0usize; 4]; // empty, one symbol, two symbols, ending in end of block
        for h in tables {
            for p in 0..1u32 << FAST_BITS {
                let e = h.fast[p as usize];
                for tail in [0, u64::MAX >> FAST_BITS] {
                    let mut data = Vec::new();
                    let mut bits = reader(p, tail, &mut data);
                    let first = one_symbol(&mut bits, h);
                    let fits = |s: Option<(u32, i32, u32)>, room: u32| {
                        s.filter(|&(run, value, len)| {
                            len <= room
                                && (-128..128).contains(&value)
                                && (value != 0 || run == 0 || run == 15)
                        })
                    };
                    let Some((run1, value1, len1)) = fits(first, FAST_BITS) else {
                        assert_eq!(e, 0, "prefix {p:#b}: the first symbol does not fit");
                        counts[0] += 1;
                        continue;
                    };
                    assert_ne!(e, 0, "prefix {p:#b}: {run1}/{value1} fits in {len1} bits");
                    assert_eq!(((e >> 4) & 15, ((e << 8) as i32) >> 24), (run1, value1));
                    let (len, step2, value2, eob) =
                        (e & 15, (e >> 8) & 31, (e as i32) >> 24, e & (1 << 13) != 0);
                    if run1 == 0 && value1 == 0 {
                        assert!(eob && len == len1 && step2 == 0, "prefix {p:#b}: lone EOB");
                        counts[3] += 1;
                        continue;
                    }
                    match fits(one_symbol(&mut bits, h), FAST_BITS - len1) {
                        Some((0, 0, len2)) => {
                            assert!(eob && step2 == 0 && value2 == 0 && len == len1 + len2);
                            counts[3] += 1;
                        }
                        Some((run2, value2_slow, len2)) => {
                            assert!(!eob, "prefix {p:#b}");
                            assert_eq!((step2, value2, len), (1 + run2, value2_slow, len1 + len2));
                            counts[2] += 1;
                        }
                        None => {
                            assert!(!eob && step2 == 0 && value2 == 0 && len == len1);
                            counts[1] += 1;
                        }
                    }
                }
            }
        }
        // Both kinds occur, and most prefixes hold two symbols or a symbol and the end.
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
        assert!(counts[2] + counts[3] > counts[0] + counts[1], "{counts:?}");
    }
}
