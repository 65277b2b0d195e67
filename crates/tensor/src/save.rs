//! Writing tensors to a safetensors file (used for machine-readable outputs such as logits).

use crate::{Error, Result, Tensor};
use std::borrow::Cow;
use std::path::Path;

struct View<'a>(&'a Tensor);

impl safetensors::View for View<'_> {
    fn dtype(&self) -> safetensors::Dtype {
        // `save` refuses block-quantized tensors before any view is serialized.
        self.0
            .dtype()
            .to_safetensors()
            .unwrap_or(safetensors::Dtype::U8)
    }
    fn shape(&self) -> &[usize] {
        self.0.dims()
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(self.0.as_bytes())
    }
    fn data_len(&self) -> usize {
        self.0.as_bytes().len()
    }
}

/// Writes `tensors` (name, tensor) to `path` in safetensors format. Block-quantized tensors
/// have no safetensors dtype and are refused.
pub fn save(path: impl AsRef<Path>, tensors: &[(String, Tensor)]) -> Result<()> {
    let path = path.as_ref();
    if let Some((name, t)) = tensors
        .iter()
        .find(|(_, t)| t.dtype().to_safetensors().is_none())
    {
        return Err(Error::UnsupportedDtype {
            path: path.into(),
            name: name.clone(),
            dtype: t.dtype().to_string(),
        });
    }
    let views = tensors.iter().map(|(name, t)| (name.as_str(), View(t)));
    safetensors::serialize_to_file(views, None, path).map_err(|e| match e {
        safetensors::SafeTensorError::IoError(source) => Error::Io {
            path: path.into(),
            source,
        },
        other => Error::CorruptHeader {
            path: path.into(),
            source: Box::new(other),
        },
    })
}
