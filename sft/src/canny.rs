//! Canny edges as ControlNet computes its edge maps: OpenCV's `cv::Canny(image, low, high)`
//! (3×3 Sobel with replicated borders, the L1 gradient |dx| + |dy|, for a colour image the
//! channel with the largest gradient at each pixel, non-maximum suppression in four
//! directions with OpenCV's fixed-point tangent test, then hysteresis over 8-neighbours).
//! ControlNet's annotator calls it with thresholds 100 and 200 on the RGB image; the edges
//! are white (255) on black. Checked pixel for pixel against OpenCV (`tests/canny.rs`).

/// ControlNet's default thresholds.
pub const LOW: f64 = 100.0;
pub const HIGH: f64 = 200.0;

/// tan(22.5°) in OpenCV's 15-bit fixed point.
const TG22: i64 = 13_573;

/// Edges of an 8-bit image of `width × height` pixels and `channels` interleaved channels:
/// 255 on an edge, 0 elsewhere (one byte per pixel). Empty when the buffer does not hold the
/// image.
pub fn canny(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    low: f64,
    high: f64,
) -> Vec<u8> {
    if width == 0 || height == 0 || channels == 0 || pixels.len() != width * height * channels {
        return Vec::new();
    }
    let (low, high) = if low > high { (high, low) } else { (low, high) };
    let (low, high) = (low.floor() as i64, high.floor() as i64);
    let (w, h) = (width, height);
    // Sobel per channel (borders replicated), then per pixel the channel of largest |dx|+|dy|
    // (the first on ties).
    let at = |x: isize, y: isize, c: usize| -> i32 {
        let x = x.clamp(0, w as isize - 1) as usize;
        let y = y.clamp(0, h as isize - 1) as usize;
        i32::from(pixels[(y * w + x) * channels + c])
    };
    let mut dx = vec![0i32; w * h];
    let mut dy = vec![0i32; w * h];
    // Magnitudes with a zero border of one pixel all round (what OpenCV's ring buffer holds).
    let mw = w + 2;
    let mut mag = vec![0i64; mw * (h + 2)];
    for y in 0..h {
        for x in 0..w {
            let (xi, yi) = (x as isize, y as isize);
            let mut best: Option<(i64, i32, i32)> = None;
            for c in 0..channels {
                let gx = at(xi + 1, yi - 1, c) + 2 * at(xi + 1, yi, c) + at(xi + 1, yi + 1, c)
                    - at(xi - 1, yi - 1, c)
                    - 2 * at(xi - 1, yi, c)
                    - at(xi - 1, yi + 1, c);
                let gy = at(xi - 1, yi + 1, c) + 2 * at(xi, yi + 1, c) + at(xi + 1, yi + 1, c)
                    - at(xi - 1, yi - 1, c)
                    - 2 * at(xi, yi - 1, c)
                    - at(xi + 1, yi - 1, c);
                let m = i64::from(gx.abs() + gy.abs());
                if best.is_none_or(|(bm, _, _)| m > bm) {
                    best = Some((m, gx, gy));
                }
            }
            let (m, gx, gy) = best.unwrap_or((0, 0, 0));
            dx[y * w + x] = gx;
            dy[y * w + x] = gy;
            mag[(y + 1) * mw + x + 1] = m;
        }
    }
    let m_at = |x: isize, y: isize| mag[((y + 1) as usize) * mw + (x + 1) as usize];
    // 0: may be an edge, 1: is not, 2: is.
    let mut map = vec![1u8; w * h];
    let mut stack = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let (xi, yi) = (x as isize, y as isize);
            let m = m_at(xi, yi);
            if m <= low {
                continue;
            }
            let (xs, ys) = (dx[y * w + x], dy[y * w + x]);
            let ax = i64::from(xs.abs());
            let ay = i64::from(ys.abs()) << 15;
            let tg22x = ax * TG22;
            let peak = if ay < tg22x {
                m > m_at(xi - 1, yi) && m >= m_at(xi + 1, yi)
            } else {
                let tg67x = tg22x + (ax << 16);
                if ay > tg67x {
                    m > m_at(xi, yi - 1) && m >= m_at(xi, yi + 1)
                } else {
                    let s: isize = if (xs ^ ys) < 0 { -1 } else { 1 };
                    m > m_at(xi - s, yi - 1) && m > m_at(xi + s, yi + 1)
                }
            };
            if peak {
                if m > high {
                    map[y * w + x] = 2;
                    stack.push((x, y));
                } else {
                    map[y * w + x] = 0;
                }
            }
        }
    }
    // Hysteresis: every possible edge 8-connected to an edge through possible edges.
    while let Some((x, y)) = stack.pop() {
        for (ox, oy) in [
            (-1, -1),
            (0, -1),
            (1, -1),
            (-1, 0),
            (1, 0),
            (-1, 1),
            (0, 1),
            (1, 1),
        ] {
            let (nx, ny) = (x as isize + ox, y as isize + oy);
            if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                continue;
            }
            let i = ny as usize * w + nx as usize;
            if map[i] == 0 {
                map[i] = 2;
                stack.push((nx as usize, ny as usize));
            }
        }
    }
    map.into_iter()
        .map(|v| if v == 2 { 255 } else { 0 })
        .collect()
}

/// ControlNet's edge map of a square 8-bit RGB image of `side` pixels: Canny at its
/// thresholds, white edges on black, in all three channels (what an image tokenizer takes).
pub fn edge_map_rgb(rgb: &[u8], side: usize) -> Vec<u8> {
    canny(rgb, side, side, 3, LOW, HIGH)
        .into_iter()
        .flat_map(|v| [v, v, v])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_square_has_its_outline() {
        // A white 8 × 8 square in a black 16 × 16 image: edges on its outline only.
        let (w, h) = (16, 16);
        let mut img = vec![0u8; w * h];
        for y in 4..12 {
            for x in 4..12 {
                img[y * w + x] = 255;
            }
        }
        let e = canny(&img, w, h, 1, LOW, HIGH);
        assert_eq!(e.len(), w * h);
        assert_eq!(e[8 * w + 8], 0, "no edge inside");
        assert_eq!(e[0], 0, "no edge in the background");
        let on_rows: usize = (0..h)
            .filter(|&y| e[y * w..(y + 1) * w].contains(&255))
            .count();
        assert!(on_rows >= 8, "{on_rows}");
        assert!(
            canny(&img, w, h, 3, LOW, HIGH).is_empty(),
            "a buffer of the wrong size"
        );
    }
}
