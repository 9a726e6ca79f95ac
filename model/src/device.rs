//! Devices other than `flex`: Burn's wgpu runtime, initialised once per process.
//!
//! `CM3_WGPU_DEVICE` picks the adapter: `default` (wgpu's choice, a high-power GPU first), `cpu`
//! (a software Vulkan device such as Mesa's lavapipe), `discrete:N`, `integrated:N` or
//! `virtual:N`. Without it, the default adapter is tried and, if the machine has none, the CPU
//! device (so that a machine with only lavapipe, as CI has, runs the wgpu paths).
use burn::tensor::DeviceKind;

use crate::error::{ModelError, Result};

/// The environment variable that picks the wgpu adapter.
pub const WGPU_DEVICE_VAR: &str = "CM3_WGPU_DEVICE";

/// `CM3_WGPU_DEVICE`'s value as a device kind.
pub fn parse_wgpu_kind(s: &str) -> Result<DeviceKind> {
    let bad = || ModelError::Input {
        op: "choosing the wgpu device",
        reason: format!(
            "{WGPU_DEVICE_VAR}={s:?}: expected default, cpu, discrete:N, integrated:N or virtual:N"
        ),
    };
    let indexed = |rest: &str| rest.parse::<usize>().map_err(|_| bad());
    Ok(match s.trim().to_ascii_lowercase().as_str() {
        "default" | "" => DeviceKind::DefaultDevice,
        "cpu" => DeviceKind::Cpu,
        other => match other.split_once(':') {
            Some(("discrete", n)) => DeviceKind::DiscreteGpu(indexed(n)?),
            Some(("integrated", n)) => DeviceKind::IntegratedGpu(indexed(n)?),
            Some(("virtual", n)) => DeviceKind::VirtualGpu(indexed(n)?),
            _ => return Err(bad()),
        },
    })
}

/// The wgpu device: initialised on the first call (with the reason when there is no adapter),
/// the same device afterwards. Burn refuses to initialise one runtime twice, so the outcome is
/// kept for the process.
#[cfg(feature = "wgpu")]
pub fn wgpu() -> Result<burn::tensor::Device> {
    use burn::tensor::Device;
    use std::sync::OnceLock;
    static DEVICE: OnceLock<std::result::Result<Device, String>> = OnceLock::new();
    let init = || -> std::result::Result<Device, String> {
        let chosen = std::env::var(WGPU_DEVICE_VAR).ok();
        let kinds = match chosen.as_deref() {
            Some(s) => vec![parse_wgpu_kind(s).map_err(|e| e.to_string())?],
            None => vec![DeviceKind::DefaultDevice, DeviceKind::Cpu],
        };
        let mut reasons = Vec::new();
        for kind in kinds {
            match Device::wgpu_options().device_kind(kind.clone()).init() {
                Ok(device) => {
                    tracing::info!(?kind, "wgpu device initialised");
                    return Ok(device);
                }
                Err(e) => reasons.push(format!("{kind:?}: {e}")),
            }
        }
        Err(format!(
            "no wgpu device could be initialised ({}); a machine without a GPU can use Mesa's \
             CPU Vulkan driver (Debian: apt-get install mesa-vulkan-drivers)",
            reasons.join("; ")
        ))
    };
    DEVICE
        .get_or_init(|| {
            std::panic::catch_unwind(init).unwrap_or_else(|_| {
                Err("the wgpu runtime panicked while looking for an adapter".into())
            })
        })
        .clone()
        .map_err(|reason| ModelError::Input {
            op: "initialising the wgpu device",
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_or_say_what_is_expected() {
        assert_eq!(parse_wgpu_kind("cpu").ok(), Some(DeviceKind::Cpu));
        assert_eq!(
            parse_wgpu_kind("Default").ok(),
            Some(DeviceKind::DefaultDevice)
        );
        assert_eq!(
            parse_wgpu_kind("discrete:1").ok(),
            Some(DeviceKind::DiscreteGpu(1))
        );
        let err = parse_wgpu_kind("gpu0").expect_err("unknown").to_string();
        assert!(
            err.contains("CM3_WGPU_DEVICE") && err.contains("discrete:N"),
            "{err}"
        );
        assert!(parse_wgpu_kind("integrated:x").is_err());
    }
}
