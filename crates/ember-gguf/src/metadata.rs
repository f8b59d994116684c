//! GGUF metadata values: the thirteen value types, arrays of any of them (nested too), and typed
//! accessors that accept any stored integer width that fits, since writers differ in which width
//! they use for the same key (`u32` vs `i32` vs `u64`).

use crate::cursor::Cursor;
use crate::GgufError;

/// Arrays may nest; beyond this depth a header is rejected rather than recursed into, so a
/// crafted file cannot exhaust the stack.
const MAX_ARRAY_DEPTH: usize = 8;

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// Type 0.
    U8(u8),
    /// Type 1.
    I8(i8),
    /// Type 2.
    U16(u16),
    /// Type 3.
    I16(i16),
    /// Type 4.
    U32(u32),
    /// Type 5.
    I32(i32),
    /// Type 6.
    F32(f32),
    /// Type 7 (stored as one byte, 0 or 1).
    Bool(bool),
    /// Type 8.
    String(String),
    /// Type 9: elements of one type.
    Array(Vec<MetaValue>),
    /// Type 10.
    U64(u64),
    /// Type 11.
    I64(i64),
    /// Type 12.
    F64(f64),
}

/// Smallest encoding of one value of type `t`, used to bound array lengths by the bytes left.
fn min_bytes(t: u32) -> usize {
    match t {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,
        9 => 12,
        _ => 8,
    }
}

impl MetaValue {
    /// Reads one value of type `t` (the type id was already read).
    pub(crate) fn read(c: &mut Cursor, t: u32, depth: usize) -> Result<MetaValue, GgufError> {
        Ok(match t {
            0 => MetaValue::U8(c.u8("u8 value")?),
            1 => MetaValue::I8(c.u8("i8 value")? as i8),
            2 => MetaValue::U16(c.u16("u16 value")?),
            3 => MetaValue::I16(c.u16("i16 value")? as i16),
            4 => MetaValue::U32(c.u32("u32 value")?),
            5 => MetaValue::I32(c.u32("i32 value")? as i32),
            6 => MetaValue::F32(f32::from_bits(c.u32("f32 value")?)),
            7 => match c.u8("bool value")? {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(c.error(format!("bool value {b} (0 or 1 expected)"))),
            },
            8 => MetaValue::String(c.string("string value")?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(c.error(format!("arrays nested deeper than {MAX_ARRAY_DEPTH}")));
                }
                let et = c.u32("array element type")?;
                if et > 12 {
                    return Err(c.error(format!("array element type {et} (0..=12 expected)")));
                }
                let n = c.count(min_bytes(et), "array length")?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(MetaValue::read(c, et, depth + 1)?);
                }
                MetaValue::Array(items)
            }
            10 => MetaValue::U64(c.u64("u64 value")?),
            11 => MetaValue::I64(c.u64("i64 value")? as i64),
            12 => MetaValue::F64(f64::from_bits(c.u64("f64 value")?)),
            other => return Err(c.error(format!("value type {other} (0..=12 expected)"))),
        })
    }

    /// The GGUF type id of this value.
    pub fn type_id(&self) -> u32 {
        match self {
            MetaValue::U8(_) => 0,
            MetaValue::I8(_) => 1,
            MetaValue::U16(_) => 2,
            MetaValue::I16(_) => 3,
            MetaValue::U32(_) => 4,
            MetaValue::I32(_) => 5,
            MetaValue::F32(_) => 6,
            MetaValue::Bool(_) => 7,
            MetaValue::String(_) => 8,
            MetaValue::Array(_) => 9,
            MetaValue::U64(_) => 10,
            MetaValue::I64(_) => 11,
            MetaValue::F64(_) => 12,
        }
    }

    /// Any integer value as `i128` (lossless for every width).
    fn as_int(&self) -> Option<i128> {
        Some(match *self {
            MetaValue::U8(v) => v.into(),
            MetaValue::I8(v) => v.into(),
            MetaValue::U16(v) => v.into(),
            MetaValue::I16(v) => v.into(),
            MetaValue::U32(v) => v.into(),
            MetaValue::I32(v) => v.into(),
            MetaValue::U64(v) => v.into(),
            MetaValue::I64(v) => v.into(),
            _ => return None,
        })
    }

    /// An integer that fits in `u32`.
    pub fn as_u32(&self) -> Option<u32> {
        self.as_int().and_then(|v| u32::try_from(v).ok())
    }

    /// An integer that fits in `u64`.
    pub fn as_u64(&self) -> Option<u64> {
        self.as_int().and_then(|v| u64::try_from(v).ok())
    }

    /// An integer that fits in `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        self.as_int().and_then(|v| i64::try_from(v).ok())
    }

    /// A float (an `f64` is rounded) or an integer (converted).
    pub fn as_f32(&self) -> Option<f32> {
        match *self {
            MetaValue::F32(v) => Some(v),
            MetaValue::F64(v) => Some(v as f32),
            _ => self.as_int().map(|v| v as f32),
        }
    }

    /// A boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            MetaValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// A string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            MetaValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// An array's elements.
    pub fn as_array(&self) -> Option<&[MetaValue]> {
        match self {
            MetaValue::Array(a) => Some(a),
            _ => None,
        }
    }

    /// An array of strings (`None` if any element is not a string).
    pub fn as_str_array(&self) -> Option<Vec<&str>> {
        self.as_array()?.iter().map(MetaValue::as_str).collect()
    }

    /// An array of numbers as `f32` (`None` if any element is not a number).
    pub fn as_f32_array(&self) -> Option<Vec<f32>> {
        self.as_array()?.iter().map(MetaValue::as_f32).collect()
    }

    /// An array of integers that fit in `i64`.
    pub fn as_i64_array(&self) -> Option<Vec<i64>> {
        self.as_array()?.iter().map(MetaValue::as_i64).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn integer_widths_convert_when_they_fit() {
        assert_eq!(MetaValue::I32(5).as_u32(), Some(5));
        assert_eq!(MetaValue::I32(-1).as_u32(), None);
        assert_eq!(MetaValue::U64(1 << 40).as_u32(), None);
        assert_eq!(MetaValue::U64(1 << 40).as_u64(), Some(1 << 40));
        assert_eq!(MetaValue::F64(0.5).as_f32(), Some(0.5));
        assert_eq!(MetaValue::String("x".into()).as_u32(), None);
    }

    #[test]
    fn deep_nesting_is_rejected() {
        // 20 nested array headers, each of length 1.
        let mut b = Vec::new();
        for _ in 0..20 {
            b.extend_from_slice(&9u32.to_le_bytes());
            b.extend_from_slice(&1u64.to_le_bytes());
        }
        let mut c = Cursor::new(&b, Path::new("x.gguf"));
        let e = MetaValue::read(&mut c, 9, 0).unwrap_err().to_string();
        assert!(e.contains("nested"), "{e}");
    }

    #[test]
    fn bad_bool_and_type_are_errors() {
        let p = Path::new("x.gguf");
        assert!(MetaValue::read(&mut Cursor::new(&[2], p), 7, 0).is_err());
        assert!(MetaValue::read(&mut Cursor::new(&[0; 8], p), 13, 0).is_err());
        // An array claiming 2^40 u32 elements with 8 bytes left.
        let mut b = 4u32.to_le_bytes().to_vec();
        b.extend_from_slice(&(1u64 << 40).to_le_bytes());
        b.extend_from_slice(&[0; 8]);
        let e = MetaValue::read(&mut Cursor::new(&b, p), 9, 0).unwrap_err().to_string();
        assert!(e.contains("array length"), "{e}");
    }
}
