//! [`StopStrings`]: stop-sequence matching for streamed text.
//!
//! Text arrives in pieces (one decoded token at a time) and a stop string may
//! span pieces, so the tail of what has arrived cannot be shown while it
//! could still be the start of a stop string. [`StopStrings::push`] says what
//! is safe to emit now and holds back the rest.

/// The outcome of feeding one piece of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// No stop string yet; `emit` can be shown (it may be empty while a
    /// possible stop prefix is held back).
    Continue { emit: String },
    /// Stop string number `index` (in the order given to `new`) matched;
    /// `emit` is the not-yet-emitted text before it. The stop string itself
    /// and anything after it are dropped. Generation should end.
    Stopped { emit: String, index: usize },
}

/// Watches a text stream for any of several stop strings.
///
/// Invariant: everything already emitted is free of stop strings, and the
/// held-back `pending` text is the longest tail that is a proper prefix of
/// some stop string; so a match can only start inside `pending`.
#[derive(Debug, Clone, Default)]
pub struct StopStrings {
    stops: Vec<String>,
    pending: String,
    /// Which stop string ended the stream, once one has.
    stopped: Option<usize>,
}

impl StopStrings {
    /// Empty stop strings are ignored (they would match everywhere), but keep
    /// their slot so that `StopOutcome::Stopped::index` refers to the list
    /// as given.
    pub fn new<I, S>(stops: I) -> StopStrings
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        StopStrings {
            stops: stops.into_iter().map(Into::into).collect(),
            pending: String::new(),
            stopped: None,
        }
    }

    /// True if no (non-empty) stop string was given: every piece passes straight through.
    pub fn is_empty(&self) -> bool {
        self.stops.iter().all(|s| s.is_empty())
    }

    /// Text held back so far (a possible start of a stop string).
    pub fn pending(&self) -> &str {
        &self.pending
    }

    /// Feeds one piece of decoded text. After a `Stopped`, further pieces
    /// are ignored (they return `Stopped` again with nothing to emit).
    pub fn push(&mut self, piece: &str) -> StopOutcome {
        if let Some(index) = self.stopped {
            return StopOutcome::Stopped {
                emit: String::new(),
                index,
            };
        }
        self.pending.push_str(piece);
        if let Some((pos, index)) = self.earliest_match() {
            let emit = self.pending[..pos].to_string();
            self.pending.clear();
            self.stopped = Some(index);
            return StopOutcome::Stopped { emit, index };
        }
        let hold = self.held_suffix_len();
        let cut = self.pending.len() - hold;
        let emit = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        StopOutcome::Continue { emit }
    }

    /// End of generation without a stop: returns the held-back text, which
    /// can now be emitted since no stop string can complete any more.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Back to the state of `new` (same stop strings), for a new request.
    pub fn reset(&mut self) {
        self.pending.clear();
        self.stopped = None;
    }

    /// Byte position of the earliest match in `pending` and which stop
    /// string it is; at equal positions the first listed wins.
    fn earliest_match(&self) -> Option<(usize, usize)> {
        let mut best: Option<(usize, usize)> = None;
        for (index, stop) in self.stops.iter().enumerate() {
            if stop.is_empty() {
                continue;
            }
            if let Some(pos) = self.pending.find(stop.as_str()) {
                if !matches!(best, Some((b, _)) if b <= pos) {
                    best = Some((pos, index));
                }
            }
        }
        best
    }

    /// Length in bytes of the longest tail of `pending` that is a proper
    /// prefix of some stop string (0 if none). Tails start on char
    /// boundaries, so the emitted part is always valid UTF-8.
    fn held_suffix_len(&self) -> usize {
        let p = &self.pending;
        let mut longest = 0;
        for stop in &self.stops {
            // A full match was already ruled out, so only proper prefixes.
            let max = stop.len().saturating_sub(1).min(p.len());
            for len in (longest + 1..=max).rev() {
                let start = p.len() - len;
                if p.is_char_boundary(start) && stop.as_bytes().starts_with(&p.as_bytes()[start..])
                {
                    longest = len;
                    break;
                }
            }
        }
        longest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_hold_back_possible_prefixes() {
        let mut s = StopStrings::new(["###", "\nUser:"]);
        assert_eq!(
            s.push("Hello"),
            StopOutcome::Continue {
                emit: "Hello".into()
            }
        );
        assert_eq!(s.push(" #"), StopOutcome::Continue { emit: " ".into() });
        assert_eq!(s.pending(), "#");
        // "#x" cannot start "###": all of it is released.
        assert_eq!(s.push("x"), StopOutcome::Continue { emit: "#x".into() });
        assert_eq!(s.push("\nUs"), StopOutcome::Continue { emit: "".into() });
        assert_eq!(
            s.push("er: hi"),
            StopOutcome::Stopped {
                emit: "".into(),
                index: 1
            }
        );
        // Stays stopped.
        assert!(matches!(
            s.push("more"),
            StopOutcome::Stopped { index: 1, .. }
        ));
    }

    #[test]
    fn stop_strings_earliest_match_wins_and_flush() {
        let mut s = StopStrings::new(["bc", "ab"]);
        assert_eq!(
            s.push("xxabc"),
            StopOutcome::Stopped {
                emit: "xx".into(),
                index: 1
            }
        );
        let mut s = StopStrings::new(["END"]);
        assert_eq!(
            s.push("the E"),
            StopOutcome::Continue {
                emit: "the ".into()
            }
        );
        assert_eq!(s.flush(), "E");
        s.reset();
        assert_eq!(s.push("EN"), StopOutcome::Continue { emit: "".into() });
        assert_eq!(
            s.push("D"),
            StopOutcome::Stopped {
                emit: "".into(),
                index: 0
            }
        );
    }

    #[test]
    fn stop_strings_respect_utf8_and_empty_stops() {
        let mut s = StopStrings::new(["", "été!"]);
        assert!(!s.is_empty());
        assert_eq!(s.push("un é"), StopOutcome::Continue { emit: "un ".into() });
        assert_eq!(s.push("t"), StopOutcome::Continue { emit: "".into() });
        assert_eq!(
            s.push("é."),
            StopOutcome::Continue {
                emit: "été.".into()
            }
        );
        let mut none = StopStrings::new(Vec::<String>::new());
        assert!(none.is_empty());
        assert_eq!(
            none.push("abc"),
            StopOutcome::Continue { emit: "abc".into() }
        );
    }
}
