// SPDX-License-Identifier: MIT
use super::*;

const MS: u64 = 1_000_000;

/// Drives a buffer as the receiver does: a packet is its sequence number
/// written into a free entry; what comes out is read back.
struct Harness {
    rb: ReorderBuffer,
    out: Vec<u16>,
}

impl Harness {
    fn new(window: usize, delay_ms: u64) -> Self {
        Harness { rb: ReorderBuffer::new(window, 64, 32, delay_ms * MS), out: Vec::new() }
    }

    fn put_ssrc(&mut self, ssrc: u32, seq: u16, now_ms: u64) -> Insert {
        let id = self.rb.free_entries(1).next().expect("a free entry");
        let mut views = Vec::new();
        self.rb.entries_mut(&[id], &mut views);
        views[0][..2].copy_from_slice(&seq.to_be_bytes());
        views[0][2..6].copy_from_slice(&ssrc.to_be_bytes());
        drop(views);
        let r = self.rb.insert(id, 6, ssrc, seq, now_ms * MS);
        self.drain();
        r
    }

    fn put(&mut self, seq: u16, now_ms: u64) -> Insert {
        self.put_ssrc(1, seq, now_ms)
    }

    fn tick(&mut self, now_ms: u64) {
        self.rb.tick(now_ms * MS);
        self.drain();
    }

    fn drain(&mut self) {
        while let Some(p) = self.rb.output() {
            assert_eq!(p.len(), 6);
            self.out.push(u16::from_be_bytes([p[0], p[1]]));
            self.rb.pop_output();
        }
    }
}

#[test]
fn in_order_packets_pass_straight_through() {
    let mut h = Harness::new(64, 50);
    for s in 0..1000u16 {
        assert_eq!(h.put(s.wrapping_add(65_000), u64::from(s)), Insert::Released);
    }
    assert_eq!(h.out, (0..1000u16).map(|s| s.wrapping_add(65_000)).collect::<Vec<_>>());
    assert_eq!(h.rb.stats(), ReorderStats { released: 1000, ..Default::default() });
    assert_eq!((h.rb.held(), h.rb.deadline()), (0, None));
}

#[test]
fn reordered_packets_leave_in_order() {
    let mut h = Harness::new(64, 50);
    for (t, s) in [0u16, 1, 3, 2, 4, 7, 5, 6, 8].into_iter().enumerate() {
        h.put(s, t as u64);
    }
    assert_eq!(h.out, (0..=8).collect::<Vec<u16>>());
    let st = h.rb.stats();
    assert_eq!((st.released, st.reordered, st.skipped, st.late), (9, 3, 0, 0));
}

#[test]
fn a_gap_is_given_up_after_the_delay_and_its_packet_is_then_late() {
    let mut h = Harness::new(64, 50);
    h.put(0, 0);
    assert_eq!(h.put(2, 10), Insert::Held);
    assert_eq!(h.put(3, 20), Insert::Held);
    assert_eq!(h.rb.deadline(), Some(60 * MS), "50 ms after packet 2 arrived");
    assert_eq!(h.rb.missing(10).collect::<Vec<_>>(), [1]);
    h.tick(59);
    assert_eq!(h.out, [0]);
    h.tick(60);
    assert_eq!(h.out, [0, 2, 3]);
    assert_eq!(h.put(1, 70), Insert::Late);
    assert_eq!(h.put(3, 71), Insert::Duplicate);
    h.put(4, 72);
    assert_eq!(h.out, [0, 2, 3, 4]);
    let st = h.rb.stats();
    assert_eq!((st.released, st.skipped, st.late, st.duplicates), (4, 1, 1, 1));
}

#[test]
fn each_gap_waits_from_its_own_first_packet() {
    let mut h = Harness::new(64, 50);
    h.put(0, 0);
    h.put(2, 10); // gap 1
    h.put(4, 40); // gap 3
    h.tick(60);
    assert_eq!(h.out, [0, 2]);
    assert_eq!(h.rb.deadline(), Some(90 * MS));
    h.put(3, 80); // in time
    assert_eq!(h.out, [0, 2, 3, 4]);
    assert_eq!(h.rb.stats().skipped, 1);
}

#[test]
fn a_full_window_gives_up_the_oldest_gap_at_once() {
    let mut h = Harness::new(16, 10_000);
    h.put(0, 0);
    for s in 2..=16u16 {
        assert_eq!(h.put(s, 1), Insert::Held);
    }
    // 17 is 16 ahead of the expected 1: no room without giving 1 up.
    assert_eq!(h.put(17, 2), Insert::Released);
    assert_eq!(h.out, [0].into_iter().chain(2..=17).collect::<Vec<u16>>());
    let st = h.rb.stats();
    assert_eq!((st.skipped, st.overflow_skipped), (1, 1));
    // A jump far ahead with nothing held: what does not fit the window is
    // given up at once (18..=84), the rest after the delay (85..=99).
    assert_eq!(h.put(100, 3), Insert::Held);
    assert_eq!(h.rb.stats().skipped, 1 + 67);
    h.tick(10_003);
    assert_eq!(*h.out.last().unwrap(), 100);
    assert_eq!((h.rb.stats().skipped, h.rb.stats().overflow_skipped), (1 + 82, 1 + 67));
}

#[test]
fn duplicates_of_held_packets_are_dropped() {
    let mut h = Harness::new(64, 50);
    h.put(0, 0);
    h.put(2, 1);
    assert_eq!(h.put(2, 2), Insert::Duplicate);
    h.put(1, 3);
    assert_eq!(h.out, [0, 1, 2]);
    assert_eq!(h.rb.stats().duplicates, 1);
}

#[test]
fn a_new_ssrc_flushes_and_starts_over() {
    let mut h = Harness::new(64, 50);
    h.put(10, 0);
    h.put(12, 1);
    assert_eq!(h.put_ssrc(2, 500, 2), Insert::Released);
    h.put_ssrc(2, 501, 3);
    assert_eq!(h.out, [10, 12, 500, 501]);
    let st = h.rb.stats();
    assert_eq!((st.restarts, st.skipped), (1, 1));
}

#[test]
fn a_sequence_restart_is_confirmed_by_a_second_packet() {
    let mut h = Harness::new(64, 50);
    for s in 0..10u16 {
        h.put(s, 0);
    }
    assert_eq!(h.put(40_000, 1), Insert::Late, "a lone far packet is dropped");
    assert_eq!(h.put(10, 2), Insert::Released);
    assert_eq!(h.put(30_000, 3), Insert::Late);
    assert_eq!(h.put(30_001, 4), Insert::Released, "confirmed");
    h.put(30_002, 5);
    assert_eq!(h.out, (0..=10).chain([30_001, 30_002]).collect::<Vec<u16>>());
    assert_eq!((h.rb.stats().restarts, h.rb.stats().late), (1, 2));
}

#[test]
fn entries_are_all_free_again_when_the_output_is_taken() {
    let mut h = Harness::new(16, 50);
    let all = h.rb.free_entries(usize::MAX).count();
    assert_eq!(all, 16 + 64);
    for s in (0..200u16).rev() {
        h.put(s, u64::from(200 - s));
        h.tick(u64::from(200 - s) * 100);
    }
    h.tick(1_000_000);
    assert_eq!(h.rb.held(), 0);
    assert_eq!(h.rb.free_entries(usize::MAX).count(), all);
    let st = h.rb.stats();
    assert_eq!(st.released + st.late + st.duplicates, 200);
}

#[test]
fn entries_mut_hands_out_the_entries_asked_for_in_order() {
    let mut rb = ReorderBuffer::new(16, 8, 4, MS);
    let ids: Vec<u32> = rb.free_entries(5).collect();
    let mut views = Vec::new();
    rb.entries_mut(&ids, &mut views);
    assert_eq!(views.len(), 5);
    for (v, id) in views.iter_mut().zip(&ids) {
        v.copy_from_slice(&id.to_le_bytes());
    }
    drop(views);
    for id in ids {
        assert_eq!(rb.entry(id), id.to_le_bytes());
    }
}

#[test]
fn missing_lists_the_gaps_before_held_packets() {
    let mut h = Harness::new(64, 50);
    h.put(100, 0);
    for s in [103u16, 104, 107] {
        h.put(s, 1);
    }
    assert_eq!(h.rb.missing(10).collect::<Vec<_>>(), [101, 102, 105, 106]);
    assert_eq!(h.rb.missing(3).collect::<Vec<_>>(), [101, 102, 105]);
    h.put(101, 2);
    h.put(102, 2);
    assert_eq!(h.rb.missing(10).collect::<Vec<_>>(), [105, 106]);
}

#[test]
fn an_entry_in_use_is_refused() {
    let mut rb = ReorderBuffer::new(16, 4, 8, MS);
    let id = rb.free_entries(1).next().unwrap();
    assert_eq!(rb.insert(id, 4, 1, 10, 0), Insert::Released);
    // Its packet waits in the output: the same entry cannot take another.
    assert_eq!(rb.insert(id, 4, 1, 11, 0), Insert::Refused);
    assert_eq!(rb.output_len(), 1);
    rb.pop_output();
    assert_eq!(rb.insert(id, 4, 1, 11, 0), Insert::Released);
}
