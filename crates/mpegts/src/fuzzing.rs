// SPDX-License-Identifier: MIT
//! Invariants checked by the cargo-fuzz target (`fuzz/`) and, on
//! pseudo-random input, by this module's unit tests. Not a stable API.

use crate::packet::{check_datagram, packets, DatagramError, PACKET_LEN, SYNC_BYTE};
use crate::psi::{SectionAssembler, SectionEvent, MAX_SECTION};
use crate::tr101290::{Analyzer, AnalyzerConfig};

/// Arbitrary bytes: the first 8 set the PID timeout and the time step,
/// the rest is a run of datagrams (each led by a length byte, in TS
/// packets) fed to an analyser and checked as `udp-ts` datagrams; the
/// same bytes go through a section assembler as payloads.
pub fn check_stream(data: &[u8]) {
    let (head, mut rest) = data.split_at(data.len().min(8));
    let step_ns = u64::from(head.first().copied().unwrap_or(1)) * 7_000_000;
    let timeout_ns = u64::from(head.get(1).copied().unwrap_or(0)) * 50_000_000;
    let mut a = Analyzer::new(AnalyzerConfig { pid_timeout_ns: timeout_ns });
    let mut t = 0u64;
    let mut total = 0u64;
    let mut bad_sync = 0u64;
    while let Some((&n, tail)) = rest.split_first() {
        let len = (usize::from(n % 8) * PACKET_LEN + usize::from(n / 8 % 2) * 17).min(tail.len());
        let (dgram, tail) = tail.split_at(len);
        rest = tail;
        match check_datagram(dgram) {
            Ok(k) => {
                assert_eq!(k * PACKET_LEN, dgram.len());
                assert!(packets(dgram).all(|p| p[0] == SYNC_BYTE));
            }
            Err(DatagramError::Empty) => assert!(dgram.is_empty()),
            Err(DatagramError::NotWholePackets { len }) => assert_ne!(len % PACKET_LEN, 0),
            Err(DatagramError::SyncByte { index, byte }) => {
                assert_ne!(byte, SYNC_BYTE);
                assert_eq!(dgram[index * PACKET_LEN], byte);
            }
        }
        // A copy of a recent datagram is counted as duplicates, not
        // analysed again.
        let before = a.cc_counters().duplicates;
        if a.datagram(dgram, t) {
            total += packets(dgram).count() as u64;
            bad_sync += packets(dgram).filter(|p| p[0] != SYNC_BYTE).count() as u64;
        } else {
            assert_eq!(a.cc_counters().duplicates - before, packets(dgram).count() as u64);
        }
        t = t.saturating_add(step_ns);
    }
    let c = a.counters();
    assert_eq!(c.ts_packets, total);
    assert_eq!(c.sync_byte_error, bad_sync);
    assert!(c.sync_loss <= bad_sync / 2);
    assert_eq!(a.cc_counters().errors, c.cc_error);
    assert!(a.cc_counters().reordered <= c.cc_error);
    assert!(a.programs() <= crate::tr101290::MAX_PROGRAMS);
    assert!(a.es_pids() <= crate::tr101290::MAX_ES_PIDS);

    let mut asm = SectionAssembler::new();
    for (i, chunk) in data.chunks(184).enumerate() {
        asm.push(chunk, i % 3 == 0, &mut |e| {
            if let SectionEvent::Section(s) = e {
                assert!(s.len() >= 3 && s.len() <= MAX_SECTION);
                assert_eq!(s.len(), 3 + usize::from(u16::from_be_bytes([s[1] & 0x0f, s[2]])));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: the same inputs on every machine.
    fn rng(seed: &mut u64) -> u64 {
        *seed ^= *seed >> 12;
        *seed ^= *seed << 25;
        *seed ^= *seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Found by ci/fuzz: a datagram repeated within the last eight is not
    /// analysed again (the check once counted it).
    #[test]
    fn regression_repeated_datagram() {
        check_stream(include_bytes!("../fuzz/seeds/ts/repeated-datagram"));
    }

    #[test]
    fn random_and_mostly_valid_streams_keep_the_invariants() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        for round in 0..300 {
            let len = (rng(&mut seed) % 4000) as usize;
            let mut data: Vec<u8> = (0..len).map(|_| rng(&mut seed) as u8).collect();
            if round % 2 == 0 {
                // Mostly sync bytes where packets start, few PIDs, so the
                // PSI and continuity paths run.
                for (i, b) in data.iter_mut().enumerate() {
                    if i % 189 == 9 {
                        *b = SYNC_BYTE;
                    } else if i % 189 == 10 {
                        *b &= 0x40;
                    } else if i % 189 == 11 {
                        *b &= 0x01;
                    }
                }
            }
            check_stream(&data);
        }
    }
}
