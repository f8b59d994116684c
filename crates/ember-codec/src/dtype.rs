//! Element types and, for floats, how a value splits into the entropy-coded exponent and the raw
//! sign+mantissa field.
//!
//! Only the exponent of a trained weight carries redundancy (≈2.6 of 8 bits for BF16); sign and
//! mantissa are close to uniform. So `lossless` codes the exponent with rANS and stores the
//! `1 + mantissa_bits` remaining bits packed and raw (see `FORMAT.md`, "Float split").

use serde::{Deserialize, Serialize};

/// Element type of a stored tensor, spelled as in safetensors headers.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dtype {
    /// IEEE binary32.
    F32,
    /// IEEE binary16.
    F16,
    /// bfloat16 (the top half of a binary32).
    BF16,
    /// IEEE binary64 (stored raw only).
    F64,
    /// Signed integers (stored raw only).
    I64,
    /// Signed 32-bit integers (stored raw only).
    I32,
    /// Signed 16-bit integers (stored raw only).
    I16,
    /// Signed 8-bit integers (stored raw only).
    I8,
    /// Unsigned 64-bit integers (stored raw only).
    U64,
    /// Unsigned 32-bit integers (stored raw only).
    U32,
    /// Unsigned 16-bit integers (stored raw only).
    U16,
    /// Unsigned 8-bit integers (stored raw only).
    U8,
    /// Booleans, one byte each (stored raw only).
    BOOL,
}

impl Dtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
            Dtype::F32 | Dtype::I32 | Dtype::U32 => 4,
            Dtype::F16 | Dtype::BF16 | Dtype::I16 | Dtype::U16 => 2,
            Dtype::I8 | Dtype::U8 | Dtype::BOOL => 1,
        }
    }

    /// The name used in safetensors headers and in `.ember` headers (`"BF16"`, `"F32"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::BF16 => "BF16",
            Dtype::F64 => "F64",
            Dtype::I64 => "I64",
            Dtype::I32 => "I32",
            Dtype::I16 => "I16",
            Dtype::I8 => "I8",
            Dtype::U64 => "U64",
            Dtype::U32 => "U32",
            Dtype::U16 => "U16",
            Dtype::U8 => "U8",
            Dtype::BOOL => "BOOL",
        }
    }

    /// Parses a safetensors dtype name; `None` for names this crate does not know.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "F32" => Dtype::F32,
            "F16" => Dtype::F16,
            "BF16" => Dtype::BF16,
            "F64" => Dtype::F64,
            "I64" => Dtype::I64,
            "I32" => Dtype::I32,
            "I16" => Dtype::I16,
            "I8" => Dtype::I8,
            "U64" => Dtype::U64,
            "U32" => Dtype::U32,
            "U16" => Dtype::U16,
            "U8" => Dtype::U8,
            "BOOL" => Dtype::BOOL,
            _ => return None,
        })
    }

    /// The bit layout of the float types that the `lossless`, `int8` and `int4` schemes accept.
    pub fn float_layout(self) -> Option<FloatLayout> {
        match self {
            Dtype::F32 => Some(FloatLayout { exp_bits: 8, mant_bits: 23 }),
            Dtype::F16 => Some(FloatLayout { exp_bits: 5, mant_bits: 10 }),
            Dtype::BF16 => Some(FloatLayout { exp_bits: 8, mant_bits: 7 }),
            _ => None,
        }
    }

    /// Reads element `i` of little-endian `bytes` of this float type as `f32` (exact for every
    /// F16/BF16 value). `None` for non-float types.
    ///
    /// BF16 widens by a plain shift (`bits << 16`), so even a signalling NaN keeps its exact
    /// pattern; F16 NaNs keep their payload and become quiet, as F16C hardware and the GPU
    /// kernels convert them.
    pub fn read_f32(self, bytes: &[u8], i: usize) -> Option<f32> {
        match self {
            Dtype::F32 => Some(f32::from_le_bytes(bytes[4 * i..4 * i + 4].try_into().ok()?)),
            Dtype::F16 => Some(half::f16::from_bits(u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]])).to_f32()),
            Dtype::BF16 => Some(f32::from_bits((u16::from_le_bytes([bytes[2 * i], bytes[2 * i + 1]]) as u32) << 16)),
            _ => None,
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Sign / exponent / mantissa widths of a float type.
///
/// Invariant: `split` and `join` are exact inverses for every bit pattern, NaN payloads included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloatLayout {
    /// Width of the exponent field (the entropy-coded symbol).
    pub exp_bits: u32,
    /// Width of the mantissa field.
    pub mant_bits: u32,
}

impl FloatLayout {
    /// Width of the raw field: the sign bit followed by the mantissa.
    pub fn raw_bits(self) -> u32 {
        1 + self.mant_bits
    }

    /// Number of distinct exponent symbols (`2^exp_bits`).
    pub fn alphabet(self) -> usize {
        1 << self.exp_bits
    }

    /// Splits the bit pattern `v` into (exponent, sign<<mant_bits | mantissa).
    #[inline(always)]
    pub fn split(self, v: u32) -> (u8, u32) {
        let mant_mask = (1u32 << self.mant_bits) - 1;
        let exp = (v >> self.mant_bits) & ((1u32 << self.exp_bits) - 1);
        let sign = v >> (self.mant_bits + self.exp_bits);
        (exp as u8, (sign << self.mant_bits) | (v & mant_mask))
    }

    /// Inverse of [`FloatLayout::split`].
    #[inline(always)]
    pub fn join(self, exp: u8, raw: u32) -> u32 {
        let mant_mask = (1u32 << self.mant_bits) - 1;
        let sign = raw >> self.mant_bits;
        (sign << (self.mant_bits + self.exp_bits)) | ((exp as u32) << self.mant_bits) | (raw & mant_mask)
    }

    /// The most mantissa bits a version-2 `lossless` symbol may carry with the exponent.
    pub fn max_joint_bits(self) -> u32 {
        self.mant_bits.min(MAX_JOINT_BITS)
    }

    /// Width of the raw field when the top `joint` mantissa bits travel in the symbol: the sign
    /// followed by the `mant_bits − joint` low mantissa bits.
    pub fn joint_raw_bits(self, joint: u32) -> u32 {
        1 + self.mant_bits - joint
    }

    /// Splits `v` into (`exponent << joint | top joint mantissa bits`, raw field of
    /// [`FloatLayout::joint_raw_bits`] bits). `joint = 0` is [`FloatLayout::split`].
    #[inline(always)]
    pub fn split_joint(self, v: u32, joint: u32) -> (u32, u32) {
        let low = self.mant_bits - joint;
        let value = (v >> low) & ((1u32 << (self.exp_bits + joint)) - 1);
        let sign = v >> (self.mant_bits + self.exp_bits);
        (value, (sign << low) | (v & ((1u32 << low) - 1)))
    }

    /// Inverse of [`FloatLayout::split_joint`].
    #[inline(always)]
    pub fn join_joint(self, value: u32, raw: u32, joint: u32) -> u32 {
        let low = self.mant_bits - joint;
        ((raw >> low) << (self.mant_bits + self.exp_bits)) | (value << low) | (raw & ((1u32 << low) - 1))
    }
}

/// Upper bound on the mantissa bits coded jointly with the exponent (format version 2): with 4,
/// a BF16 symbol has at most 4096 possible values, of which at most 256 may occur in a tensor.
pub const MAX_JOINT_BITS: u32 = 4;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_join_round_trips_every_16_bit_pattern() {
        for dtype in [Dtype::BF16, Dtype::F16] {
            let layout = dtype.float_layout().unwrap();
            for v in 0..=u16::MAX as u32 {
                let (e, r) = layout.split(v);
                assert!(r < 1 << layout.raw_bits());
                assert_eq!(layout.join(e, r), v, "{dtype} {v:#06x}");
            }
        }
    }

    #[test]
    fn joint_split_round_trips_every_16_bit_pattern() {
        for dtype in [Dtype::BF16, Dtype::F16] {
            let layout = dtype.float_layout().unwrap();
            for joint in 0..=layout.max_joint_bits() {
                for v in 0..=u16::MAX as u32 {
                    let (value, raw) = layout.split_joint(v, joint);
                    assert!(value < 1 << (layout.exp_bits + joint));
                    assert!(raw < 1 << layout.joint_raw_bits(joint));
                    assert_eq!(layout.join_joint(value, raw, joint), v, "{dtype} {joint} {v:#06x}");
                }
            }
            let (e, r) = layout.split(0xbeef);
            assert_eq!(layout.split_joint(0xbeef, 0), (e as u32, r));
        }
        let layout = Dtype::F32.float_layout().unwrap();
        for v in [0u32, 0x8000_0000, 0x7f80_0000, 0xff80_0000, 0x7fc0_1234, 0x0000_0001, u32::MAX, 0x3f80_0000] {
            for joint in 0..=layout.max_joint_bits() {
                let (value, raw) = layout.split_joint(v, joint);
                assert_eq!(layout.join_joint(value, raw, joint), v);
            }
        }
    }

    #[test]
    fn split_join_round_trips_f32_edge_patterns() {
        let layout = Dtype::F32.float_layout().unwrap();
        for v in [0u32, 0x8000_0000, 0x7f80_0000, 0xff80_0000, 0x7fc0_1234, 0x0000_0001, u32::MAX, 0x3f80_0000] {
            let (e, r) = layout.split(v);
            assert_eq!(layout.join(e, r), v);
        }
    }

    #[test]
    fn names_round_trip() {
        for d in [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::I64, Dtype::BOOL, Dtype::U8] {
            assert_eq!(Dtype::from_name(d.name()), Some(d));
        }
        assert_eq!(Dtype::from_name("Q4_1"), None);
    }
}
