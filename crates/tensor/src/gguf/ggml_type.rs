//! ggml's tensor type ids, as GGUF tensor infos spell them (ggml `ggml.h`, `enum ggml_type`).

use crate::DType;

/// What a GGUF tensor's ggml type id means to this engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    /// A type this engine computes with.
    Supported(DType),
    /// A type ggml defines that this engine does not implement (its ggml name).
    Unimplemented(&'static str),
}

/// The meaning of ggml type id `id`, or `None` for an id ggml does not define.
pub fn ggml_type(id: u32) -> Option<GgmlType> {
    use GgmlType::{Supported as S, Unimplemented as U};
    Some(match id {
        0 => S(DType::F32),
        1 => S(DType::F16),
        2 => S(DType::Q4_0),
        3 => S(DType::Q4_1),
        4 => U("Q4_2 (removed from ggml)"),
        5 => U("Q4_3 (removed from ggml)"),
        6 => S(DType::Q5_0),
        7 => S(DType::Q5_1),
        8 => S(DType::Q8_0),
        9 => U("Q8_1"),
        10 => S(DType::Q2_K),
        11 => S(DType::Q3_K),
        12 => S(DType::Q4_K),
        13 => S(DType::Q5_K),
        14 => S(DType::Q6_K),
        15 => U("Q8_K"),
        16 => U("IQ2_XXS"),
        17 => U("IQ2_XS"),
        18 => U("IQ3_XXS"),
        19 => U("IQ1_S"),
        20 => U("IQ4_NL"),
        21 => U("IQ3_S"),
        22 => U("IQ2_S"),
        23 => U("IQ4_XS"),
        24 => U("I8"),
        25 => U("I16"),
        26 => S(DType::I32),
        27 => S(DType::I64),
        28 => U("F64"),
        29 => U("IQ1_M"),
        30 => S(DType::BF16),
        31 => U("Q4_0_4_4 (removed from ggml)"),
        32 => U("Q4_0_4_8 (removed from ggml)"),
        33 => U("Q4_0_8_8 (removed from ggml)"),
        34 => U("TQ1_0"),
        35 => U("TQ2_0"),
        36 => U("IQ4_NL_4_4 (removed from ggml)"),
        37 => U("IQ4_NL_4_8 (removed from ggml)"),
        38 => U("IQ4_NL_8_8 (removed from ggml)"),
        39 => U("MXFP4"),
        _ => return None,
    })
}

/// The ggml type id of `dtype` (for writing GGUF files).
pub fn ggml_type_id(dtype: DType) -> u32 {
    match dtype {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q4_0 => 2,
        DType::Q4_1 => 3,
        DType::Q5_0 => 6,
        DType::Q5_1 => 7,
        DType::Q8_0 => 8,
        DType::Q2_K => 10,
        DType::Q3_K => 11,
        DType::Q4_K => 12,
        DType::Q5_K => 13,
        DType::Q6_K => 14,
        DType::I32 => 26,
        DType::I64 => 27,
        DType::BF16 => 30,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::ALL_DTYPES;

    #[test]
    fn ids_round_trip_for_every_dtype() {
        for d in ALL_DTYPES {
            assert_eq!(
                ggml_type(ggml_type_id(d)),
                Some(GgmlType::Supported(d)),
                "{d}"
            );
        }
        assert_eq!(ggml_type(16), Some(GgmlType::Unimplemented("IQ2_XXS")));
        assert_eq!(ggml_type(40), None);
    }
}
