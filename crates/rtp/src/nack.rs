// SPDX-License-Identifier: MIT
//! When to ask for a missing packet (RFC 4585 generic NACK): at once when
//! a gap shows, then again every `retry` until it arrives, `max_tries`
//! requests were made, or its wait in the reorder buffer is over (the
//! caller stops listing it as missing then).

/// How many sequence numbers are followed at once.
pub const TRACKED: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Entry {
    seq: u16,
    valid: bool,
    tries: u8,
    last_ns: u64,
}

/// Requests per missing sequence number.
pub struct NackScheduler {
    entries: Box<[Entry; TRACKED]>,
    retry_ns: u64,
    max_tries: u8,
    /// Sequence numbers requested (retries included).
    pub requested: u64,
}

impl NackScheduler {
    /// Ask again every `retry_ns`, at most `max_tries` times per packet.
    pub fn new(retry_ns: u64, max_tries: u8) -> Self {
        NackScheduler {
            entries: Box::new([Entry { seq: 0, valid: false, tries: 0, last_ns: 0 }; TRACKED]),
            retry_ns: retry_ns.max(1),
            max_tries: max_tries.max(1),
            requested: 0,
        }
    }

    /// The retry interval.
    pub fn retry_ns(&self) -> u64 {
        self.retry_ns
    }

    /// Of the sequence numbers `missing` now, those to request at `now`,
    /// into `out`; returns how many. A number seen for the first time is
    /// requested at once.
    pub fn due(&mut self, missing: impl Iterator<Item = u16>, now: u64, out: &mut [u16]) -> usize {
        let mut n = 0;
        for seq in missing {
            if n == out.len() {
                break;
            }
            let e = &mut self.entries[usize::from(seq) % TRACKED];
            if !e.valid || e.seq != seq {
                *e = Entry { seq, valid: true, tries: 0, last_ns: 0 };
            }
            if e.tries >= self.max_tries || (e.tries > 0 && now < e.last_ns.saturating_add(self.retry_ns)) {
                continue;
            }
            e.tries += 1;
            e.last_ns = now;
            out[n] = seq;
            n += 1;
        }
        self.requested += n as u64;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_request_at_once_then_retries_then_give_up() {
        let mut s = NackScheduler::new(10, 3);
        let mut out = [0u16; 8];
        let n = s.due([5u16, 6].into_iter(), 0, &mut out);
        assert_eq!(&out[..n], &[5, 6]);
        assert_eq!(s.due([5u16, 6].into_iter(), 9, &mut out), 0, "not yet");
        let n = s.due([5u16, 6, 9].into_iter(), 10, &mut out);
        assert_eq!(&out[..n], &[5, 6, 9]);
        let n = s.due([5u16].into_iter(), 20, &mut out);
        assert_eq!(&out[..n], &[5]);
        assert_eq!(s.due([5u16].into_iter(), 100, &mut out), 0, "three tries, then no more");
        assert_eq!(s.requested, 6);
        // The same number a lap later is a new packet.
        assert_eq!(s.due([5u16.wrapping_add(TRACKED as u16)].into_iter(), 101, &mut out), 1);
        // Bounded by the output.
        let mut two = [0u16; 2];
        assert_eq!(s.due(100u16..200, 200, &mut two), 2);
    }
}
