//! MLLP framing: a start block (`0x0B`), the message, an end block (`0x1C`) and a carriage return
//! (`0x0D`).
//!
//! [`Decoder`] takes the bytes of a connection as they arrive, in pieces of any size, and tells
//! what they held: whole messages, messages over the size limit (only their first bytes kept, so
//! a huge one costs no memory), bytes outside any frame, and messages cut short by a new start
//! block. It never fails and never panics, whatever the bytes. It is lenient where senders
//! differ: the carriage return after the end block may be missing, and whitespace between frames
//! (a line feed after the carriage return) is ignored.

/// The start block.
pub const START: u8 = 0x0B;
/// The end block.
pub const END: u8 = 0x1C;
/// The carriage return after the end block.
pub const CR: u8 = 0x0D;

/// How many first bytes of an oversize message are kept (enough for its MSH segment).
pub const HEAD: usize = 4096;

/// What a piece of a connection's bytes held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole message, without its framing.
    Message(Vec<u8>),
    /// A message longer than the limit: its length, and its first [`HEAD`] bytes.
    Oversize {
        /// The message's length in bytes.
        len: u64,
        /// Its first bytes.
        head: Vec<u8>,
    },
    /// Bytes outside any frame (whitespace aside), discarded.
    Garbage(u64),
    /// A message cut short by a start block before its end block: its bytes (this many) are
    /// discarded.
    Abandoned(u64),
}

/// Where the decoder is.
#[derive(Debug)]
enum State {
    /// Between frames.
    Outside,
    /// Inside a frame: the bytes so far (only the first [`HEAD`] once over the limit) and the
    /// frame's length.
    Inside { bytes: Vec<u8>, len: u64 },
    /// Just after an end block: a carriage return is taken as part of it.
    AfterEnd,
}

/// An MLLP decoder of one connection.
#[derive(Debug)]
pub struct Decoder {
    max: usize,
    state: State,
}

impl Decoder {
    /// A decoder that takes messages of up to `max` bytes.
    #[must_use]
    pub const fn new(max: usize) -> Self {
        Self {
            max,
            state: State::Outside,
        }
    }

    /// Whether a message has started and not ended.
    #[must_use]
    pub const fn in_frame(&self) -> bool {
        matches!(self.state, State::Inside { .. })
    }

    /// The length of the message under way (0 between messages).
    #[must_use]
    pub const fn pending(&self) -> u64 {
        match &self.state {
            State::Inside { len, .. } => *len,
            _ => 0,
        }
    }

    /// Takes the next bytes of the connection; what they completed is pushed onto `events`, in
    /// order.
    pub fn push(&mut self, mut data: &[u8], events: &mut Vec<Event>) {
        let mut garbage = 0u64;
        while !data.is_empty() {
            match &mut self.state {
                State::AfterEnd => {
                    if data[0] == CR {
                        data = &data[1..];
                    }
                    self.state = State::Outside;
                }
                State::Outside => {
                    let at = data.iter().position(|b| *b == START);
                    let skipped = &data[..at.unwrap_or(data.len())];
                    garbage += skipped.iter().filter(|b| !b.is_ascii_whitespace()).count() as u64;
                    match at {
                        Some(at) => {
                            data = &data[at + 1..];
                            self.state = State::Inside {
                                bytes: Vec::new(),
                                len: 0,
                            };
                        }
                        None => data = &[],
                    }
                }
                State::Inside { bytes, len } => {
                    let at = data.iter().position(|b| *b == END || *b == START);
                    let part = &data[..at.unwrap_or(data.len())];
                    *len += part.len() as u64;
                    let room = if *len > self.max as u64 {
                        HEAD
                    } else {
                        self.max
                    };
                    if bytes.len() > room {
                        bytes.truncate(room);
                        bytes.shrink_to_fit();
                    }
                    let take = part.len().min(room.saturating_sub(bytes.len()));
                    bytes.extend_from_slice(&part[..take]);
                    let Some(at) = at else {
                        data = &[];
                        continue;
                    };
                    if garbage > 0 {
                        events.push(Event::Garbage(garbage));
                        garbage = 0;
                    }
                    let (bytes, len) = (std::mem::take(bytes), *len);
                    if data[at] == START {
                        events.push(Event::Abandoned(len));
                        self.state = State::Inside {
                            bytes: Vec::new(),
                            len: 0,
                        };
                    } else {
                        events.push(if len > self.max as u64 {
                            Event::Oversize { len, head: bytes }
                        } else {
                            Event::Message(bytes)
                        });
                        self.state = State::AfterEnd;
                    }
                    data = &data[at + 1..];
                }
            }
        }
        if garbage > 0 {
            events.push(Event::Garbage(garbage));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn frame(m: &[u8]) -> Vec<u8> {
        [&[START][..], m, &[END, CR]].concat()
    }

    /// Every event of `bytes` fed in pieces of `step` bytes.
    fn decode(bytes: &[u8], max: usize, step: usize) -> Vec<Event> {
        let mut d = Decoder::new(max);
        let mut events = Vec::new();
        for piece in bytes.chunks(step) {
            d.push(piece, &mut events);
        }
        // Garbage is reported per piece: add up neighbours so pieces do not matter.
        let mut merged: Vec<Event> = Vec::new();
        for e in events {
            match (merged.last_mut(), &e) {
                (Some(Event::Garbage(a)), Event::Garbage(b)) => *a += b,
                _ => merged.push(e),
            }
        }
        merged
    }

    #[test]
    fn messages_come_out_whole_however_the_bytes_are_split() {
        let stream = [
            frame(b"MSH|one"),
            b"\n".to_vec(),
            frame(b"MSH|two\rPID|1"),
            // No carriage return after the end block.
            vec![START],
            b"MSH|three".to_vec(),
            vec![END],
            frame(b"MSH|four"),
        ]
        .concat();
        let want = vec![
            Event::Message(b"MSH|one".to_vec()),
            Event::Message(b"MSH|two\rPID|1".to_vec()),
            Event::Message(b"MSH|three".to_vec()),
            Event::Message(b"MSH|four".to_vec()),
        ];
        for step in [1, 2, 3, 7, 1000] {
            assert_eq!(decode(&stream, 100, step), want, "pieces of {step}");
        }
    }

    #[test]
    fn garbage_cut_frames_and_oversize_messages_are_told_apart() {
        let big = vec![b'x'; 10_000];
        let stream = [
            b"hello".to_vec(),
            vec![START],
            b"MSH|cut short".to_vec(),
            frame(b"MSH|after"),
            frame(&big),
            b"\x00\xff".to_vec(),
            frame(b"MSH|last"),
        ]
        .concat();
        for step in [1, 5, 4096, 100_000] {
            let events = decode(&stream, 5_000, step);
            assert_eq!(events.len(), 6, "pieces of {step}: {events:?}");
            assert_eq!(events[0], Event::Garbage(5));
            assert_eq!(events[1], Event::Abandoned(13));
            assert_eq!(events[2], Event::Message(b"MSH|after".to_vec()));
            assert_eq!(
                events[3],
                Event::Oversize {
                    len: 10_000,
                    head: vec![b'x'; HEAD]
                }
            );
            assert_eq!(events[4], Event::Garbage(2));
            assert_eq!(events[5], Event::Message(b"MSH|last".to_vec()));
        }
    }

    #[test]
    fn a_frame_without_an_end_stays_pending_and_keeps_no_more_than_the_head() {
        let mut d = Decoder::new(1_000);
        let mut events = Vec::new();
        d.push(&[START], &mut events);
        for _ in 0..1_000 {
            d.push(&[b'y'; 1_000], &mut events);
        }
        assert!(events.is_empty());
        assert!(d.in_frame());
        assert_eq!(d.pending(), 1_000_000);
        match &d.state {
            State::Inside { bytes, .. } => assert!(bytes.capacity() <= 2 * HEAD, "{}", bytes.len()),
            other => panic!("{other:?}"),
        }
        d.push(&[END, CR], &mut events);
        assert!(matches!(
            &events[..],
            [Event::Oversize { len: 1_000_000, .. }]
        ));
        assert!(!d.in_frame());
    }
}
