//! §E.1: "To maintain a balanced dataset during training, we implemented an up/down sampling
//! strategy with a threshold of 3/0.3."
//!
//! Each task's share of an epoch is its natural size times a multiplier, target size / natural
//! size clamped to [`MixConfig::min_down`, `MixConfig::max_up`]: a small task is seen at most 3
//! times per epoch, a large one at least 0.3 of it. The paper does not say what the target is;
//! [`Balance`] makes it a setting. Each epoch every example of a task with multiplier m appears
//! floor(m) times plus once more with probability frac(m) (for m < 1: once with probability m),
//! so its expected count is exactly m and the epoch's size is natural × m on average.

use std::collections::{BTreeMap, BTreeSet};

use cm3_core::rng::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SftError};
use crate::templates::Task;

/// The paper's up-sampling threshold: a task is repeated at most 3 times per epoch.
pub const MAX_UP: f64 = 3.0;
/// The paper's down-sampling threshold: at least 0.3 of a task is kept per epoch.
pub const MIN_DOWN: f64 = 0.3;

/// What each task's size is pulled towards before clamping.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Every task towards the mean size of the mixture's tasks. The default: "a balanced
    /// dataset" reads as equal shares, and aiming at the mean (rather than the largest or the
    /// smallest task) keeps an epoch, before clamping, as large as one pass over the data.
    #[default]
    Uniform,
    /// Multiplier 1: the natural mixture, no re-sampling.
    Natural,
    /// Task t towards total × weight(t) / sum of weights. Must weigh exactly the mixture's tasks.
    Weights(BTreeMap<Task, f64>),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MixConfig {
    pub balance: Balance,
    /// Largest multiplier (the paper's 3).
    pub max_up: f64,
    /// Smallest multiplier (the paper's 0.3).
    pub min_down: f64,
}

impl Default for MixConfig {
    fn default() -> Self {
        Self {
            balance: Balance::Uniform,
            max_up: MAX_UP,
            min_down: MIN_DOWN,
        }
    }
}

impl MixConfig {
    /// Finite thresholds with 0 < min_down <= 1 <= max_up, and usable weights.
    pub fn validate(&self) -> Result<()> {
        let bad = |setting, value, reason| {
            Err(SftError::InvalidSetting {
                setting,
                value,
                reason,
            })
        };
        if !(self.min_down.is_finite() && self.min_down > 0.0 && self.min_down <= 1.0) {
            return bad(
                "min_down",
                self.min_down,
                "must be in (0, 1] (the paper uses 0.3)",
            );
        }
        if !(self.max_up.is_finite() && self.max_up >= 1.0) {
            return bad(
                "max_up",
                self.max_up,
                "must be finite and at least 1 (the paper uses 3)",
            );
        }
        if let Balance::Weights(weights) = &self.balance {
            for (&task, &weight) in weights {
                if !(weight.is_finite() && weight > 0.0) {
                    return Err(SftError::InvalidWeight { task, weight });
                }
            }
        }
        Ok(())
    }
}

/// One task's part of the mixture.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskShare {
    pub task: Task,
    /// Examples the task has.
    pub natural: u64,
    /// The size [`Balance`] aims at, before clamping.
    pub target: f64,
    /// target / natural clamped to [min_down, max_up].
    pub multiplier: f64,
    /// Examples per epoch on average: natural × multiplier.
    pub expected: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MixPlan {
    /// In the order the sizes were given.
    pub tasks: Vec<TaskShare>,
}

impl MixPlan {
    pub fn expected_total(&self) -> f64 {
        self.tasks.iter().map(|t| t.expected).sum()
    }

    pub fn get(&self, task: Task) -> Option<&TaskShare> {
        self.tasks.iter().find(|t| t.task == task)
    }
}

/// Table 5's "# Examples", as the sizes of the full mixture.
pub fn table5_sizes() -> Vec<(Task, u64)> {
    Task::ALL.iter().map(|&t| (t, t.examples())).collect()
}

/// Each task's multiplier and expected share of an epoch.
pub fn plan(sizes: &[(Task, u64)], cfg: &MixConfig) -> Result<MixPlan> {
    cfg.validate()?;
    if sizes.is_empty() {
        return Err(SftError::EmptyMixture);
    }
    let mut seen = BTreeSet::new();
    for &(task, natural) in sizes {
        if !seen.insert(task) {
            return Err(SftError::DuplicateTask { task });
        }
        if natural == 0 {
            return Err(SftError::EmptyTask { task });
        }
    }
    let total: f64 = sizes.iter().map(|&(_, n)| n as f64).sum();
    let targets: Vec<f64> = match &cfg.balance {
        Balance::Uniform => vec![total / sizes.len() as f64; sizes.len()],
        Balance::Natural => sizes.iter().map(|&(_, n)| n as f64).collect(),
        Balance::Weights(weights) => {
            if let Some(&task) = weights.keys().find(|t| !seen.contains(*t)) {
                return Err(SftError::UnknownWeight { task });
            }
            let mut w = Vec::with_capacity(sizes.len());
            for &(task, _) in sizes {
                w.push(*weights.get(&task).ok_or(SftError::MissingWeight { task })?);
            }
            let sum: f64 = w.iter().sum();
            w.iter().map(|x| total * x / sum).collect()
        }
    };
    let tasks = sizes
        .iter()
        .zip(targets)
        .map(|(&(task, natural), target)| {
            let multiplier = (target / natural as f64).clamp(cfg.min_down, cfg.max_up);
            TaskShare {
                task,
                natural,
                target,
                multiplier,
                expected: natural as f64 * multiplier,
            }
        })
        .collect();
    Ok(MixPlan { tasks })
}

const STREAM_EPOCH: u64 = 0x6570_6f63_6800_0006; // "epoch"
/// The task is xored into the low bits.
const STREAM_MIX: u64 = 0x6d69_7800_0000_0000; // "mix"

fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    SplitMix64::for_pair(seed, STREAM_EPOCH, epoch).next_u64()
}

fn repeats_in(share: &TaskShare, epoch_seed: u64, example: u64) -> u32 {
    let whole = share.multiplier.floor();
    let frac = share.multiplier - whole;
    // Saturates for an absurd max_up instead of overflowing.
    let base = whole as u32;
    if frac > 0.0 {
        let mut rng = SplitMix64::for_pair(epoch_seed, STREAM_MIX ^ share.task as u64, example);
        if rng.next_f64() < frac {
            return base.saturating_add(1);
        }
    }
    base
}

/// How many times example `example` of the task is seen in `epoch`: floor(m), plus one with
/// probability frac(m). A function of (seed, epoch, task, example) only, so any split of the
/// work agrees.
pub fn repeats(share: &TaskShare, epoch: u64, seed: u64, example: u64) -> u32 {
    repeats_in(share, epoch_seed(seed, epoch), example)
}

/// The task's examples seen in `epoch`, as (example index, repeat count), count > 0, in index
/// order. Lazy, for tasks too large to list.
pub fn draw_task(
    share: &TaskShare,
    epoch: u64,
    seed: u64,
) -> impl Iterator<Item = (u64, u32)> + '_ {
    let es = epoch_seed(seed, epoch);
    (0..share.natural).filter_map(move |i| {
        let n = repeats_in(share, es, i);
        (n > 0).then_some((i, n))
    })
}

/// One task's examples in one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDraw {
    pub task: Task,
    /// (example index, repeat count), count > 0, in index order.
    pub picks: Vec<(u64, u32)>,
}

impl TaskDraw {
    pub fn total(&self) -> u64 {
        self.picks.iter().map(|&(_, n)| u64::from(n)).sum()
    }
}

/// Every task's examples in `epoch`, seeded by (seed, epoch, task): epochs differ, runs repeat.
pub fn draw(plan: &MixPlan, epoch: u64, seed: u64) -> Vec<TaskDraw> {
    plan.tasks
        .iter()
        .map(|share| TaskDraw {
            task: share.task,
            picks: draw_task(share, epoch, seed).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-4 * b.abs().max(1.0)
    }

    #[test]
    fn default_multipliers_on_table5() {
        let p = plan(&table5_sizes(), &MixConfig::default()).expect("must succeed");
        // Sum of Table 5's sizes (thousands): 127 + 300 + 3000 + 1000 (edge) + 1000 (seg)
        // + 1000 (hed) + 142 + 1000 (depth) + 1000 (norm) + 500 + 591 + 144 + 14 + 164 + 1300
        // + 92 + 26 + 6 = 11406, over 18 tasks: mean target 633.666... thousand.
        let target = 633_666.666_666_7;
        let cases: [(Task, f64, f64); 18] = [
            (Task::InstructPix2Pix, 3.0, 381_000.0), // 633.67 / 127 = 4.99 -> clamped to 3
            (Task::Ocr, 2.112_222, target),          // 633.67 / 300
            (Task::Detection, 0.3, 900_000.0),       // 633.67 / 3000 = 0.211 -> clamped to 0.3
            (Task::Edge, 0.633_667, target),         // 633.67 / 1000
            (Task::Seg, 0.633_667, target),
            (Task::Hed, 0.633_667, target),
            (Task::Pose, 3.0, 426_000.0), // 633.67 / 142 = 4.46 -> 3
            (Task::Depth, 0.633_667, target),
            (Task::Norm, 0.633_667, target),
            (Task::Scribble, 1.267_333, target),   // 633.67 / 500
            (Task::Coco, 1.072_194, target),       // 633.67 / 591: above 1, the mean is larger
            (Task::Flickr30k, 3.0, 432_000.0),     // 633.67 / 144 = 4.40 -> 3
            (Task::ImageParagraph, 3.0, 42_000.0), // 633.67 / 14 = 45.3 -> 3
            (Task::LocalizedNarratives, 3.0, 492_000.0), // 633.67 / 164 = 3.86 -> 3
            (Task::Vqa2, 0.487_436, target),       // 633.67 / 1300
            (Task::VizWiz, 3.0, 276_000.0),        // 633.67 / 92 = 6.89 -> 3
            (Task::Okvqa, 3.0, 78_000.0),          // 633.67 / 26 = 24.4 -> 3
            (Task::ScienceQa, 3.0, 18_000.0),      // 633.67 / 6 = 105.6 -> 3
        ];
        for (task, m, expected) in cases {
            let s = p.get(task).expect("must succeed");
            assert!(close(s.target, target), "{task}: {}", s.target);
            assert!(close(s.multiplier, m), "{task}: {} != {m}", s.multiplier);
            assert!(
                close(s.expected, expected),
                "{task}: {} != {expected}",
                s.expected
            );
        }
        // 9 tasks at the target (5,703,000) + the clamped ones (381 + 900 + 426 + 432 + 42 + 492
        // + 276 + 78 + 18 = 3,045 thousand).
        assert!(
            close(p.expected_total(), 8_748_000.0),
            "{}",
            p.expected_total()
        );
    }

    #[test]
    fn natural_and_weights() {
        let sizes = [(Task::Coco, 591_000), (Task::Vqa2, 1_300_000)];
        let cfg = MixConfig {
            balance: Balance::Natural,
            ..MixConfig::default()
        };
        let p = plan(&sizes, &cfg).expect("must succeed");
        assert!(p.tasks.iter().all(|t| t.multiplier == 1.0));
        let d = draw(&p, 0, 0);
        assert_eq!(
            d[0].total(),
            591_000,
            "multiplier 1: every example exactly once"
        );

        // Total 1,891,000; weights 3:1 -> targets 1,418,250 and 472,750.
        let cfg = MixConfig {
            balance: Balance::Weights([(Task::Coco, 3.0), (Task::Vqa2, 1.0)].into()),
            ..MixConfig::default()
        };
        let p = plan(&sizes, &cfg).expect("must succeed");
        assert!(close(p.tasks[0].multiplier, 1_418_250.0 / 591_000.0)); // 2.3998
        assert!(close(p.tasks[1].multiplier, 472_750.0 / 1_300_000.0)); // 0.3637
    }

    #[test]
    fn bad_settings_are_errors() {
        let sizes = [(Task::Coco, 10)];
        let with = |max_up, min_down| MixConfig {
            max_up,
            min_down,
            ..MixConfig::default()
        };
        for cfg in [
            with(0.9, 0.3),
            with(3.0, 0.0),
            with(3.0, 1.5),
            with(f64::INFINITY, 0.3),
        ] {
            assert!(matches!(
                plan(&sizes, &cfg),
                Err(SftError::InvalidSetting { .. })
            ));
        }
        assert!(plan(&sizes, &with(f64::NAN, 0.3)).is_err());
        assert!(plan(&sizes, &with(1.0, 1.0)).is_ok());
        let d = MixConfig::default();
        assert!(matches!(plan(&[], &d), Err(SftError::EmptyMixture)));
        assert!(matches!(
            plan(&[(Task::Ocr, 0)], &d),
            Err(SftError::EmptyTask { task: Task::Ocr })
        ));
        assert!(matches!(
            plan(&[(Task::Ocr, 1), (Task::Ocr, 2)], &d),
            Err(SftError::DuplicateTask { task: Task::Ocr })
        ));
        let w = |m: &[(Task, f64)]| MixConfig {
            balance: Balance::Weights(m.iter().copied().collect()),
            ..MixConfig::default()
        };
        assert!(matches!(
            plan(&sizes, &w(&[(Task::Ocr, 1.0)])),
            Err(SftError::UnknownWeight { task: Task::Ocr })
        ));
        assert!(matches!(
            plan(&[(Task::Coco, 1), (Task::Ocr, 1)], &w(&[(Task::Coco, 1.0)])),
            Err(SftError::MissingWeight { task: Task::Ocr })
        ));
        assert!(matches!(
            plan(&sizes, &w(&[(Task::Coco, 0.0)])),
            Err(SftError::InvalidWeight { .. })
        ));
    }

    #[test]
    fn config_reads_from_json_and_refuses_unknown_keys() {
        let cfg: MixConfig = serde_json::from_str("{}").expect("must succeed");
        assert_eq!(cfg, MixConfig::default());
        let cfg: MixConfig =
            serde_json::from_str(r#"{"balance": {"weights": {"coco": 2, "image-paragraph": 1}}}"#)
                .expect("must succeed");
        assert_eq!(
            cfg.balance,
            Balance::Weights([(Task::Coco, 2.0), (Task::ImageParagraph, 1.0)].into())
        );
        let cfg: MixConfig =
            serde_json::from_str(r#"{"balance": "natural"}"#).expect("must succeed");
        assert_eq!(cfg.balance, Balance::Natural);
        assert!(serde_json::from_str::<MixConfig>(r#"{"max_upp": 2}"#).is_err());
        assert!(
            serde_json::from_str::<MixConfig>(r#"{"balance": {"weights": {"cocoa": 1}}}"#).is_err()
        );
        let json = serde_json::to_string(&MixConfig::default()).expect("must succeed");
        assert_eq!(json, r#"{"balance":"uniform","max_up":3.0,"min_down":0.3}"#);
    }

    fn share(multiplier: f64, natural: u64) -> TaskShare {
        TaskShare {
            task: Task::Coco,
            natural,
            target: natural as f64 * multiplier,
            multiplier,
            expected: natural as f64 * multiplier,
        }
    }

    #[test]
    fn draws_repeat_and_epochs_differ() {
        let p = plan(
            &[(Task::Coco, 5_000), (Task::ScienceQa, 300)],
            &MixConfig::default(),
        )
        .expect("must succeed");
        assert_eq!(draw(&p, 4, 11), draw(&p, 4, 11));
        assert_ne!(draw(&p, 4, 11)[0], draw(&p, 5, 11)[0]);
        assert_ne!(draw(&p, 4, 11)[0], draw(&p, 4, 12)[0]);
        // ScienceQA is clamped at exactly 3: every example three times, whatever the epoch.
        let sq = &draw(&p, 4, 11)[1];
        assert!(
            sq.picks
                .iter()
                .enumerate()
                .all(|(i, &(j, n))| i as u64 == j && n == 3)
        );
        // Random access agrees with the listing.
        let s = &p.tasks[0];
        let listed: Vec<(u64, u32)> = draw_task(s, 2, 9).collect();
        let direct: Vec<(u64, u32)> = (0..s.natural)
            .map(|i| (i, repeats(s, 2, 9, i)))
            .filter(|&(_, n)| n > 0)
            .collect();
        assert_eq!(listed, direct);
    }

    #[test]
    fn each_example_is_seen_m_times_on_average_over_epochs() {
        for m in [0.3, 0.63, 1.07, 2.5] {
            let s = share(m, 4);
            let epochs = 20_000;
            for ex in 0..4 {
                let n: u64 = (0..epochs).map(|e| u64::from(repeats(&s, e, 1, ex))).sum();
                let mean = n as f64 / epochs as f64;
                // frac(1 - frac) <= 1/4: sd of the mean <= 0.5 / sqrt(20000) = 0.0035.
                assert!((mean - m).abs() < 0.02, "m {m} example {ex}: {mean}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn draw_mean_is_natural_times_m(seed in any::<u64>(), epoch in 0u64..1000, m in 0.3f64..3.0) {
            let n = 20_000u64;
            let s = share(m, n);
            let total: u64 = draw_task(&s, epoch, seed).map(|(_, c)| u64::from(c)).sum();
            let frac = m - m.floor();
            // Bernoulli(frac) per example: sd of the total sqrt(n frac (1 - frac)); 6 sd.
            let tol = 6.0 * (n as f64 * frac * (1.0 - frac)).sqrt() + 1e-9;
            prop_assert!((total as f64 - n as f64 * m).abs() <= tol, "total {total}, m {m}");
            let lo = m.floor() as u32;
            prop_assert!(draw_task(&s, epoch, seed).all(|(_, c)| c == lo || c == lo + 1));
        }
    }
}
