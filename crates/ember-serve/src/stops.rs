//! Stop strings over streamed text: generation ends where the text first contains one, and the
//! client never sees any of it. Text that could still become the start of a stop string is held
//! back until the next token decides.

/// The text of one sequence and how much of it was released.
#[derive(Debug, Clone, Default)]
pub struct StopScanner {
    stops: Vec<String>,
    text: String,
    released: usize,
}

/// What one piece of new text yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Text to send now.
    pub release: String,
    /// A stop string was reached: the sequence ends, and nothing after it is sent.
    pub stopped: bool,
}

impl StopScanner {
    /// A scanner for `stops` (empty strings are ignored).
    pub fn new(stops: Vec<String>) -> Self {
        StopScanner { stops: stops.into_iter().filter(|s| !s.is_empty()).collect(), ..Self::default() }
    }

    /// Appends `piece` and returns what may be sent.
    pub fn push(&mut self, piece: &str) -> Scan {
        // A stop can only be completed by the new piece: search from where it could start.
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let from = floor_char(&self.text, self.text.len().saturating_sub(longest.saturating_sub(1)).max(self.released));
        self.text.push_str(piece);
        let hit = self.stops.iter().filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i)).min();
        if let Some(end) = hit {
            let release = self.text[self.released..end].to_string();
            self.released = end;
            return Scan { release, stopped: true };
        }
        // Hold back the longest suffix that is a proper prefix of some stop string.
        let mut keep = 0;
        for s in &self.stops {
            for n in (1..s.len()).rev() {
                if n > keep && s.is_char_boundary(n) && self.text.ends_with(&s[..n]) {
                    keep = n;
                    break;
                }
            }
        }
        let end = floor_char(&self.text, self.text.len() - keep).max(self.released);
        let release = self.text[self.released..end].to_string();
        self.released = end;
        Scan { release, stopped: false }
    }

    /// What was held back, once the sequence ends without a stop string.
    pub fn finish(&mut self) -> String {
        let rest = self.text[self.released..].to_string();
        self.released = self.text.len();
        rest
    }
}

/// The largest char boundary of `s` at or below `i`.
fn floor_char(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut s = StopScanner::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let scan = s.push(p);
            out.push_str(&scan.release);
            if scan.stopped {
                return (out, true);
            }
        }
        out.push_str(&s.finish());
        (out, false)
    }

    #[test]
    fn stops_across_pieces_and_holds_back_only_what_could_match() {
        assert_eq!(run(&["\n\n"], &["Berlin.", "\n", "\nThe"]), ("Berlin.".into(), true));
        assert_eq!(run(&["END"], &["a E", "N", "x"]), ("a ENx".into(), false));
        assert_eq!(run(&["END"], &["a E", "ND b"]), ("a ".into(), true));
        assert_eq!(run(&[], &["plain ", "text"]), ("plain text".into(), false));
        assert_eq!(run(&["ü"], &["aü", "b"]), ("a".into(), true));
        assert_eq!(run(&["xyz", "yz!"], &["ab x", "yz! c"]), ("ab ".into(), true));
    }

    #[test]
    fn released_text_never_runs_ahead_of_a_possible_stop() {
        let mut s = StopScanner::new(vec!["<end>".into()]);
        assert_eq!(s.push("one <e").release, "one ");
        assert_eq!(s.push("n").release, "");
        assert_eq!(s.push("x").release, "<enx");
    }
}
