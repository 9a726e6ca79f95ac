//! Where training runs: Burn's `flex` CPU backend (always built), or a GPU backend compiled in
//! by the `wgpu` or `cuda` cargo feature.
use burn::tensor::Device;
use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Pure-Rust CPU backend (multi-threaded with rayon).
    #[default]
    Flex,
    /// WebGPU (Vulkan, Metal, DX12) on the adapter `CM3_WGPU_DEVICE` names, else the default
    /// one, else the CPU's; feature `wgpu`.
    Wgpu,
    /// CUDA device 0; feature `cuda`.
    Cuda,
}

impl Backend {
    /// `n` devices of this backend for data-parallel training (`cm3 train --devices n`): flex,
    /// `n` replicas on the CPU (each in its own thread; the CPU's cores are shared, so this
    /// tests the data-parallel path rather than speeding it up); CUDA, devices 0 to n − 1
    /// (untested here: no GPU). wgpu picks one adapter, so it takes one device.
    pub fn devices(self, n: usize) -> Result<Vec<Device>> {
        if n == 0 {
            return Err(TrainError::Config("--devices must be at least 1".into()));
        }
        let first = self.device()?;
        match self {
            _ if n == 1 => Ok(vec![first]),
            Backend::Flex => Ok(vec![first; n]),
            #[cfg(feature = "cuda")]
            Backend::Cuda => Ok((0..n).map(Device::cuda).collect()),
            _ => Err(TrainError::Config(format!(
                "--devices {n}: the {self:?} backend trains on one device here (flex takes \
                 several replicas, cuda several GPUs)"
            ))),
        }
    }

    /// The device (without autodiff), or a clear error when this build lacks the backend.
    pub fn device(self) -> Result<Device> {
        let missing = |feature: &str| {
            Err(TrainError::Config(format!(
                "this cm3 was built without the `{feature}` backend: rebuild with \
                 `cargo build --release --features {feature}`"
            )))
        };
        match self {
            Backend::Flex => Ok(Device::flex()),
            // The adapter from `CM3_WGPU_DEVICE`, or the default one, or the CPU's (lavapipe).
            #[cfg(feature = "wgpu")]
            Backend::Wgpu => {
                cm3_model::device::wgpu().map_err(|e| TrainError::Config(e.to_string()))
            }
            #[cfg(not(feature = "wgpu"))]
            Backend::Wgpu => missing("wgpu"),
            #[cfg(feature = "cuda")]
            Backend::Cuda => Ok(Device::cuda(0usize)),
            #[cfg(not(feature = "cuda"))]
            Backend::Cuda => missing("cuda"),
        }
    }
}
