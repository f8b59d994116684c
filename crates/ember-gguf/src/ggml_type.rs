//! ggml tensor types: their ids in a GGUF file and their block layout. The layout (elements per
//! block, bytes per block) is known for every type, including those without a dequantizer here,
//! so that every tensor's byte range can be checked against the file at open.

use std::fmt;

use crate::GgufError;

macro_rules! ggml_types {
    ($($name:ident = $id:literal, $block:literal, $bytes:literal;)*) => {
        /// A ggml tensor type, as stored in a GGUF tensor description.
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum GgmlType {
            $(
                #[doc = concat!("ggml type id ", stringify!($id), ": ", stringify!($block), " elements in ", stringify!($bytes), " bytes.")]
                $name,
            )*
        }

        impl GgmlType {
            /// The type with this id; ids of removed or future types are an error.
            pub fn from_id(id: u32) -> Result<Self, GgufError> {
                match id {
                    $($id => Ok(GgmlType::$name),)*
                    other => Err(GgufError::UnknownType(other)),
                }
            }

            /// The id GGUF stores for this type.
            pub fn id(self) -> u32 {
                match self { $(GgmlType::$name => $id,)* }
            }

            /// Elements per block (1 for plain types).
            pub fn block_elems(self) -> usize {
                match self { $(GgmlType::$name => $block,)* }
            }

            /// Bytes per block.
            pub fn block_bytes(self) -> usize {
                match self { $(GgmlType::$name => $bytes,)* }
            }

            /// ggml's name for the type (`Q4_K`, `F16`...).
            pub fn name(self) -> &'static str {
                match self { $(GgmlType::$name => stringify!($name),)* }
            }
        }
    };
}

// Layouts from ggml's `type_traits` table (ggml.c); QK_K = 256.
ggml_types! {
    F32 = 0, 1, 4;
    F16 = 1, 1, 2;
    Q4_0 = 2, 32, 18;
    Q4_1 = 3, 32, 20;
    Q5_0 = 6, 32, 22;
    Q5_1 = 7, 32, 24;
    Q8_0 = 8, 32, 34;
    Q8_1 = 9, 32, 36;
    Q2_K = 10, 256, 84;
    Q3_K = 11, 256, 110;
    Q4_K = 12, 256, 144;
    Q5_K = 13, 256, 176;
    Q6_K = 14, 256, 210;
    Q8_K = 15, 256, 292;
    IQ2_XXS = 16, 256, 66;
    IQ2_XS = 17, 256, 74;
    IQ3_XXS = 18, 256, 98;
    IQ1_S = 19, 256, 50;
    IQ4_NL = 20, 32, 18;
    IQ3_S = 21, 256, 110;
    IQ2_S = 22, 256, 82;
    IQ4_XS = 23, 256, 136;
    I8 = 24, 1, 1;
    I16 = 25, 1, 2;
    I32 = 26, 1, 4;
    I64 = 27, 1, 8;
    F64 = 28, 1, 8;
    IQ1_M = 29, 256, 56;
    BF16 = 30, 1, 2;
    TQ1_0 = 34, 256, 54;
    TQ2_0 = 35, 256, 66;
    MXFP4 = 39, 32, 17;
}

impl GgmlType {
    /// Bytes needed for `n_elems` elements, or `None` when `n_elems` is not a whole number of
    /// blocks (ggml requires each row to be) or the size overflows.
    pub fn bytes_for(self, n_elems: u64) -> Option<u64> {
        let block = self.block_elems() as u64;
        if !n_elems.is_multiple_of(block) {
            return None;
        }
        (n_elems / block).checked_mul(self.block_bytes() as u64)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_unknown_ids_fail() {
        for id in 0..64 {
            match GgmlType::from_id(id) {
                Ok(t) => assert_eq!(t.id(), id),
                Err(e) => assert!(e.to_string().contains(&id.to_string())),
            }
        }
        assert!(GgmlType::from_id(4).is_err(), "Q4_2 was removed");
        assert_eq!(GgmlType::from_id(12).unwrap(), GgmlType::Q4_K);
    }

    #[test]
    fn sizes() {
        assert_eq!(GgmlType::Q4_1.bytes_for(64), Some(40));
        assert_eq!(GgmlType::Q4_1.bytes_for(33), None);
        assert_eq!(GgmlType::F32.bytes_for(u64::MAX), None);
        assert_eq!(GgmlType::Q6_K.bytes_for(512), Some(420));
    }
}
