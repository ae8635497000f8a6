//! Server-sent events framing: splitting a byte stream into events, and an event's data.
//!
//! Every SSE stream the edge reads (a provider's, re-framed for the client, or translated) goes
//! through [`EventSplitter`]: each byte is scanned once, however the stream is cut into
//! chunks (a search resumes where the last one stopped), and an event that grows past
//! [`MAX_EVENT_BYTES`] is an error instead of unbounded memory.

use std::borrow::Cow;

use bytes::{Bytes, BytesMut};

/// The largest event accepted: far beyond any chunk a model streams.
pub const MAX_EVENT_BYTES: usize = 16 * 1024 * 1024;

/// An event larger than [`MAX_EVENT_BYTES`], or a stream that never ends one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the stream sent an event larger than {MAX_EVENT_BYTES} bytes")]
pub struct EventTooLarge;

/// Splits a byte stream into complete events, each with its blank-line end.
#[derive(Default)]
pub struct EventSplitter {
    buf: BytesMut,
    /// Where the search for the next event's end resumes.
    scanned: usize,
}

impl EventSplitter {
    /// Adds an upstream chunk and returns the events it completes. When no partial event is
    /// waiting, as in the usual read of one or more whole events, they are slices of `bytes`
    /// itself: a relay passes them on without copying.
    pub fn push(&mut self, bytes: &Bytes) -> Result<Vec<Bytes>, EventTooLarge> {
        if !self.buf.is_empty() {
            return self.push_slice(bytes);
        }
        let mut events = Vec::new();
        let mut start = 0;
        while let Some(end) = event_end(bytes, start) {
            events.push(bytes.slice(start..end));
            start = end;
        }
        self.keep_partial(&bytes[start..])?;
        Ok(events)
    }

    /// Adds bytes and returns the events they complete, copied out of the splitter's buffer.
    fn push_slice(&mut self, bytes: &[u8]) -> Result<Vec<Bytes>, EventTooLarge> {
        self.buf.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = event_end(&self.buf, self.scanned) {
            events.push(self.buf.split_to(end).freeze());
            self.scanned = 0;
        }
        self.keep_partial(&[])?;
        Ok(events)
    }

    /// Buffers the start of an event still to be completed, which must stay within bounds.
    fn keep_partial(&mut self, partial: &[u8]) -> Result<(), EventTooLarge> {
        self.buf.extend_from_slice(partial);
        // An end is `\n\n`, `\n\r\n` (within `\r\n\r\n`): a `\n` in the last two bytes may
        // still begin one.
        self.scanned = self.buf.len().saturating_sub(2);
        if self.buf.len() > MAX_EVENT_BYTES {
            return Err(EventTooLarge);
        }
        Ok(())
    }

    /// Whatever is left after the stream ended (an unterminated last event).
    pub fn rest(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        (!self.buf.is_empty()).then(|| self.buf.split().freeze())
    }
}

/// The index just past the first event end (a blank line: `\n\n`, or `\r\n\r\n`) that starts
/// at or after `from`.
fn event_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(offset) = buf.get(at..)?.iter().position(|&b| b == b'\n') {
        let newline = at + offset;
        match (buf.get(newline + 1), buf.get(newline + 2)) {
            (Some(b'\n'), _) => return Some(newline + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(newline + 3),
            _ => at = newline + 1,
        }
    }
    None
}

/// The concatenated `data:` lines of an event.
pub fn event_data(event: &[u8]) -> Option<Cow<'_, [u8]>> {
    let mut lines = event
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter_map(|l| l.strip_prefix(b"data:"))
        .map(|l| l.strip_prefix(b" ").unwrap_or(l));
    let first = lines.next()?;
    match lines.next() {
        None => Some(Cow::Borrowed(first)),
        Some(second) => {
            let mut joined = first.to_vec();
            for line in std::iter::once(second).chain(lines) {
                joined.push(b'\n');
                joined.extend_from_slice(line);
            }
            Some(Cow::Owned(joined))
        }
    }
}

/// The data of each complete event of a stream (for providers whose events are translated).
#[derive(Default)]
pub struct DataFramer {
    splitter: EventSplitter,
}

impl DataFramer {
    /// Adds bytes and returns the data of the events they complete (events without data are
    /// left out).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, EventTooLarge> {
        Ok(self
            .splitter
            .push_slice(bytes)?
            .iter()
            .filter_map(|event| event_data(event).map(Cow::into_owned))
            .collect())
    }

    /// The data of an event the stream ended without terminating.
    pub fn rest(&mut self) -> Option<Vec<u8>> {
        let rest = self.splitter.rest()?;
        event_data(&rest).map(Cow::into_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_found_however_the_stream_is_cut() {
        let stream = b"data: {\"a\":1}\n\ndata: b\r\n\r\n: comment\n\ndata: c\ndata: d\n\n";
        let whole = EventSplitter::default().push(&Bytes::from_static(stream));
        for cut in 1..stream.len() {
            let mut splitter = EventSplitter::default();
            let mut events = Vec::new();
            for piece in stream.chunks(cut) {
                events.extend(
                    splitter
                        .push(&Bytes::copy_from_slice(piece))
                        .unwrap_or_default(),
                );
            }
            assert_eq!(Ok(events), whole, "cut every {cut} bytes");
            let mut splitter = EventSplitter::default();
            let mut events = Vec::new();
            for piece in stream.chunks(cut) {
                events.extend(splitter.push_slice(piece).unwrap_or_default());
            }
            assert_eq!(Ok(events), whole, "cut every {cut} bytes, pushed as slices");
        }
        let events = whole.unwrap_or_default();
        assert_eq!(events.len(), 4);
        assert_eq!(event_data(&events[3]).as_deref(), Some(&b"c\nd"[..]));
        assert_eq!(event_data(&events[2]), None);
    }

    #[test]
    fn an_event_that_never_ends_is_bounded() {
        let mut splitter = EventSplitter::default();
        let piece = Bytes::from(vec![b'x'; 1024 * 1024]);
        let mut result = Ok(Vec::new());
        for _ in 0..=16 {
            result = splitter.push(&piece);
        }
        assert_eq!(result, Err(EventTooLarge));
    }

    #[test]
    fn whole_events_are_passed_on_without_a_copy() {
        let chunk = Bytes::from_static(b"data: 1\n\ndata: 2\n\ndata: 3");
        let mut splitter = EventSplitter::default();
        let events = splitter.push(&chunk).unwrap_or_default();
        assert_eq!(events, [&b"data: 1\n\n"[..], &b"data: 2\n\n"[..]]);
        assert_eq!(events[0].as_ptr(), chunk.as_ptr(), "a slice of the chunk");
        assert_eq!(
            events[1].as_ptr(),
            chunk[9..].as_ptr(),
            "a slice of the chunk"
        );
        // The partial third event waits for the rest, which then completes it.
        let events = splitter
            .push(&Bytes::from_static(b"\n\n"))
            .unwrap_or_default();
        assert_eq!(events, [&b"data: 3\n\n"[..]]);
    }

    #[test]
    fn data_of_an_unterminated_last_event_is_kept() {
        let mut framer = DataFramer::default();
        assert_eq!(
            framer.push(b"data: 1\n\ndata: 2").unwrap_or_default(),
            vec![b"1".to_vec()]
        );
        assert_eq!(framer.rest(), Some(b"2".to_vec()));
    }

    proptest::proptest! {
        /// Any bytes, cut anywhere: no panic, and the events found are the same as from the
        /// stream in one piece.
        #[test]
        fn any_stream_cut_anywhere_splits_the_same(
            stream in proptest::collection::vec(
                proptest::sample::select(vec![b'\n', b'\r', b'd', b':', b' ', b'x']), 0..400),
            cut in 1usize..50,
        ) {
            let whole = EventSplitter::default().push(&Bytes::from(stream.clone()));
            let mut splitter = EventSplitter::default();
            let mut events = Vec::new();
            // Shared and copied pieces in turn: the splitter moves between its two ways.
            for (i, piece) in stream.chunks(cut).enumerate() {
                let found = if i % 3 == 2 {
                    splitter.push_slice(piece)
                } else {
                    splitter.push(&Bytes::copy_from_slice(piece))
                };
                events.extend(found.unwrap_or_default());
            }
            proptest::prop_assert_eq!(Ok(events.clone()), whole);
            for event in &events {
                let _ = event_data(event);
            }
            let _ = DataFramer::default().push(&stream);
        }
    }
}
