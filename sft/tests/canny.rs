//! `cm3_sft::canny` against OpenCV's `cv2.Canny`, pixel for pixel, on crops of the sample's
//! images (fixtures from `scripts/canny-oracle.py`, provenance in `fixtures/canny/SOURCE.txt`).
use std::path::{Path, PathBuf};

use cm3_sft::canny::canny;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/canny")
        .join(name)
}

fn load(name: &str) -> (Vec<u8>, usize, usize, usize) {
    let img = image::open(fixture(name)).expect("fixture");
    let (w, h) = (img.width() as usize, img.height() as usize);
    match img {
        image::DynamicImage::ImageLuma8(g) => (g.into_raw(), w, h, 1),
        other => (other.to_rgb8().into_raw(), w, h, 3),
    }
}

#[test]
fn edges_equal_opencv_on_every_fixture() {
    let mut checked = 0;
    for stem in [
        "coco-107438",
        "coco-114174",
        "skimage-camera",
        "skimage-astronaut",
    ] {
        for (lo, hi) in [(100, 200), (50, 150)] {
            for (kind, input) in [
                ("rgb", format!("{stem}.png")),
                ("gray", format!("{stem}.gray-input.png")),
            ] {
                let (px, w, h, c) = load(&input);
                assert_eq!(c, if kind == "rgb" { 3 } else { 1 }, "{input}");
                let (want, ww, wh, wc) = load(&format!("{stem}.{lo}-{hi}.{kind}.png"));
                assert_eq!((ww, wh, wc), (w, h, 1));
                let got = canny(&px, w, h, c, f64::from(lo), f64::from(hi));
                let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
                let edges = want.iter().filter(|&&v| v == 255).count();
                assert_eq!(
                    differ, 0,
                    "{stem} {kind} {lo}/{hi}: {differ} pixels differ ({edges} edge pixels)"
                );
                assert!(
                    edges > 20,
                    "{stem} {kind} {lo}/{hi}: a fixture with {edges} edges tests little"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 16);
}
