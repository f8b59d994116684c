//! Dequantization to `f32`: the same arithmetic as ggml's `dequantize_row_*` (ggml-quants.c),
//! block by block. Plain types are here; the 32-element "legacy" blocks in `legacy`, the
//! 256-element k-quant super-blocks in `kquants`.

mod kquants;
mod legacy;

pub(crate) use kquants::scale_min_k4;

use half::{bf16, f16};

use crate::{GgmlType, GgufError};

/// Checks that `bytes` holds exactly the blocks of `n_elems` elements of type `t`.
pub(crate) fn check_blocks(t: GgmlType, bytes: &[u8], n_elems: usize) -> Result<(), GgufError> {
    let expected = t.bytes_for(n_elems as u64).ok_or_else(|| GgufError::BadBlocks {
        ggml_type: t,
        msg: format!("{n_elems} elements are not whole blocks of {}", t.block_elems()),
    })?;
    if bytes.len() as u64 != expected {
        return Err(GgufError::BadBlocks {
            ggml_type: t,
            msg: format!("{n_elems} elements take {expected} bytes, got {}", bytes.len()),
        });
    }
    Ok(())
}

/// Dequantizes `n_elems` elements of type `t` stored in `bytes` to row-major `f32`.
///
/// `bytes` must hold exactly the blocks for `n_elems` elements (`n_elems` a multiple of the
/// block size): a mismatch means the caller sliced the wrong range, so it is an error rather than
/// a silent truncation. Types without a dequantizer here (`Q2_K`, the `IQ*` family...) are an
/// error naming the type.
pub fn dequantize(t: GgmlType, bytes: &[u8], n_elems: usize) -> Result<Vec<f32>, GgufError> {
    check_blocks(t, bytes, n_elems)?;
    let block_fn: fn(&[u8], &mut [f32]) = match t {
        GgmlType::F32 => |b, y| y[0] = f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        GgmlType::F16 => |b, y| y[0] = f16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::BF16 => |b, y| y[0] = bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        GgmlType::F64 => |b, y| y[0] = f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
        GgmlType::I8 => |b, y| y[0] = b[0] as i8 as f32,
        GgmlType::I16 => |b, y| y[0] = i16::from_le_bytes([b[0], b[1]]) as f32,
        GgmlType::I32 => |b, y| y[0] = i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
        GgmlType::Q4_0 => legacy::q4_0,
        GgmlType::Q4_1 => legacy::q4_1,
        GgmlType::Q5_0 => legacy::q5_0,
        GgmlType::Q5_1 => legacy::q5_1,
        GgmlType::Q8_0 => legacy::q8_0,
        GgmlType::Q2_K => kquants::q2_k,
        GgmlType::Q3_K => kquants::q3_k,
        GgmlType::Q4_K => kquants::q4_k,
        GgmlType::Q5_K => kquants::q5_k,
        GgmlType::Q6_K => kquants::q6_k,
        other => return Err(GgufError::NoDequantizer(other)),
    };
    let mut out = vec![0f32; n_elems];
    for (b, y) in bytes.chunks_exact(t.block_bytes()).zip(out.chunks_exact_mut(t.block_elems())) {
        block_fn(b, y);
    }
    Ok(out)
}

/// The `f16` at `b[i..i + 2]` as `f32`.
#[inline]
pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_types() {
        let b: Vec<u8> = [1.5f32, -2.0].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(dequantize(GgmlType::F32, &b, 2).unwrap(), [1.5, -2.0]);
        // f16 0x3c00 = 1.0, 0xc000 = -2.0; bf16 0x3fc0 = 1.5, 0xc040 = -3.0.
        assert_eq!(dequantize(GgmlType::F16, &[0x00, 0x3c, 0x00, 0xc0], 2).unwrap(), [1.0, -2.0]);
        assert_eq!(dequantize(GgmlType::BF16, &[0xc0, 0x3f, 0x40, 0xc0], 2).unwrap(), [1.5, -3.0]);
        assert_eq!(dequantize(GgmlType::I8, &[0xff, 7], 2).unwrap(), [-1.0, 7.0]);
        assert_eq!(dequantize(GgmlType::I16, &[0xfe, 0xff], 1).unwrap(), [-2.0]);
        assert_eq!(dequantize(GgmlType::I32, &(-5i32).to_le_bytes(), 1).unwrap(), [-5.0]);
        assert_eq!(dequantize(GgmlType::F64, &0.25f64.to_le_bytes(), 1).unwrap(), [0.25]);
    }

    #[test]
    fn size_mismatches_and_missing_dequantizers_are_errors() {
        let e = dequantize(GgmlType::F32, &[0; 7], 2).unwrap_err().to_string();
        assert!(e.contains("F32") && e.contains("8 bytes"), "{e}");
        let e = dequantize(GgmlType::Q4_0, &[0; 18], 31).unwrap_err().to_string();
        assert!(e.contains("whole blocks"), "{e}");
        let e = dequantize(GgmlType::IQ2_XXS, &[0; 66], 256).unwrap_err().to_string();
        assert!(e.contains("IQ2_XXS") && e.contains("not implemented"), "{e}");
        assert!(dequantize(GgmlType::F32, &[], 0).unwrap().is_empty());
    }
}
