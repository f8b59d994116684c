//! Incremental decoding for printing generated text as it comes. A token may end in the middle
//! of a multi-byte character (byte-level BPE splits UTF-8 anywhere), and some decoders depend on
//! the previous token (SentencePiece strips the leading space of the first one), so text is
//! decoded over a window that starts at the last token already emitted and released only when it
//! no longer ends in an incomplete character (U+FFFD).

use super::Tokenizer;

/// Turns ids pushed one at a time into newly completed text.
pub struct StreamDecoder<'a> {
    tokenizer: &'a Tokenizer,
    ids: Vec<u32>,
    /// Start of the decoding window (the first id whose text was already emitted, as context).
    prefix_start: usize,
    /// End of the text already emitted.
    read_end: usize,
}

impl<'a> StreamDecoder<'a> {
    pub(super) fn new(tokenizer: &'a Tokenizer) -> Self {
        StreamDecoder { tokenizer, ids: Vec::new(), prefix_start: 0, read_end: 0 }
    }

    /// Adds `id`; returns the text it completes, or `None` while a character is still
    /// incomplete (or the token decodes to nothing).
    pub fn push(&mut self, id: u32) -> Option<String> {
        self.ids.push(id);
        let prefix = self.tokenizer.decode(&self.ids[self.prefix_start..self.read_end]).ok()?;
        let text = self.tokenizer.decode(&self.ids[self.prefix_start..]).ok()?;
        if text.len() > prefix.len() && !text.ends_with('\u{FFFD}') && text.is_char_boundary(prefix.len()) {
            self.prefix_start = self.read_end;
            self.read_end = self.ids.len();
            Some(text[prefix.len()..].to_owned())
        } else {
            None
        }
    }

    /// Whatever is left undecoded (an incomplete character comes out as U+FFFD).
    pub fn finish(&mut self) -> Option<String> {
        let prefix = self.tokenizer.decode(&self.ids[self.prefix_start..self.read_end]).ok()?;
        let text = self.tokenizer.decode(&self.ids[self.prefix_start..]).ok()?;
        self.prefix_start = self.read_end;
        self.read_end = self.ids.len();
        (text.len() > prefix.len() && text.is_char_boundary(prefix.len())).then(|| text[prefix.len()..].to_owned())
    }
}
