//! Reading tensors back to the host.
//!
//! A GPU device runs the work queued before a read only at the read, and can fail it there: out
//! of memory, or a buffer over the device's binding limit (on lavapipe, a VQ batch of 4 images
//! at 256²). Burn's `into_data` and `into_scalar` panic then; these return
//! [`ModelError::Tensor`] naming the operation, so that `cm3 train`, `generate` and `tokenize`
//! end with a message instead of an abort. On `flex` a read cannot fail this way.
use burn::tensor::kind::Basic;
use burn::tensor::{Int, Tensor, TensorData};

use crate::error::{ModelError, Result};

/// The hint given with a failed read: what a user can change.
const HINT: &str =
    "out of its memory, or a buffer over its largest: a smaller batch or model may fit";

/// A tensor's data on the host, in its own element type.
pub(crate) fn data<const D: usize, K: Basic>(
    t: Tensor<D, K>,
    op: &'static str,
) -> Result<TensorData> {
    t.try_into_data().map_err(|e| ModelError::Tensor {
        op,
        reason: format!("the device failed the work ({HINT}): {e}"),
    })
}

/// A float tensor's values, row-major.
pub fn read_f32<const D: usize>(t: Tensor<D>, op: &'static str) -> Result<Vec<f32>> {
    data(t, op)?
        .try_into_vec_as::<f32>()
        .map_err(|e| ModelError::Tensor {
            op,
            reason: format!("{e:?}"),
        })
}

/// An integer tensor's values, row-major.
pub fn read_i64<const D: usize>(t: Tensor<D, Int>, op: &'static str) -> Result<Vec<i64>> {
    data(t, op)?
        .try_into_vec_as::<i64>()
        .map_err(|e| ModelError::Tensor {
            op,
            reason: format!("{e:?}"),
        })
}

/// The one value of a float tensor of one element (a loss, a norm).
pub fn read_scalar<const D: usize>(t: Tensor<D>, op: &'static str) -> Result<f32> {
    let n = t.shape().num_elements();
    match read_f32(t, op)?.as_slice() {
        [v] => Ok(*v),
        _ => Err(ModelError::Tensor {
            op,
            reason: format!("expected one value, the tensor has {n}"),
        }),
    }
}
