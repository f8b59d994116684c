//! llama.cpp's converter reorders the rows of each attention head of `attn_q`/`attn_k` so that
//! its RoPE can rotate adjacent pairs (GPT-J style); Hugging Face Llama rotates the two halves of
//! a head instead. [`unpermute_qk`] undoes the reordering so HF-layout RoPE can be used.

/// Undoes `convert_hf_to_gguf.py`'s `permute(w, n_head)` on a row-major `rows × cols` matrix
/// (a bias is `rows × 1`) of any element type (values, or the codes and per-row scales of a
/// quantized tensor). Pass the query head count for `attn_q` and the KV head count for
/// `attn_k`.
///
/// Within each head of `rows / n_head` rows, GGUF row `2 i + j` (`i` < half, `j` ∈ {0, 1}) is HF
/// row `j · half + i`: `permute` reshapes a head to `(2, half)`, swaps the axes and flattens.
///
/// # Panics
/// If `data.len() != rows * cols` or `rows` is not a multiple of `2 * n_head`: both are
/// programming errors (the caller checked the tensor shape against the hyper-parameters).
pub fn unpermute_qk<T: Copy + Default>(data: &[T], rows: usize, cols: usize, n_head: usize) -> Vec<T> {
    assert_eq!(data.len(), rows * cols, "unpermute_qk: {} values for {rows} x {cols}", data.len());
    assert!(
        n_head > 0 && rows.is_multiple_of(2 * n_head),
        "unpermute_qk: {rows} rows do not split into {n_head} heads of an even size"
    );
    let head_dim = rows / n_head;
    let half = head_dim / 2;
    let mut out = vec![T::default(); data.len()];
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let src = h * head_dim + 2 * i + j;
                let dst = h * head_dim + j * half + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&data[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::unpermute_qk;

    /// llama.cpp's `permute`, transcribed literally from its numpy:
    /// `w.reshape(n_head, 2, rows // n_head // 2, cols).swapaxes(1, 2).reshape(rows, cols)`:
    /// output index `(h, i, j, c)` over shape `(n_head, half, 2, cols)` reads input `(h, j, i, c)`.
    fn permute(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
        let half = rows / n_head / 2;
        let mut out = Vec::with_capacity(w.len());
        for h in 0..n_head {
            for i in 0..half {
                for j in 0..2 {
                    for c in 0..cols {
                        out.push(w[((h * 2 + j) * half + i) * cols + c]);
                    }
                }
            }
        }
        out
    }

    #[test]
    fn inverts_llama_cpp_permute() {
        for (rows, cols, n_head) in [(8, 3, 1), (8, 3, 2), (12, 5, 3), (64, 4, 8), (12, 1, 3)] {
            let w: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
            let p = permute(&w, rows, cols, n_head);
            assert_ne!(p, w, "{rows}x{cols}/{n_head}: permute should move rows");
            assert_eq!(unpermute_qk(&p, rows, cols, n_head), w, "{rows}x{cols}/{n_head}");
        }
    }

    #[test]
    fn one_head_by_hand() {
        // One head of 4 rows (half = 2), one column: HF rows [a0, a1, b0, b1] are stored
        // interleaved as [a0, b0, a1, b1].
        assert_eq!(unpermute_qk(&[10.0, 20.0, 11.0, 21.0], 4, 1, 1), [10.0, 11.0, 20.0, 21.0]);
    }
}
