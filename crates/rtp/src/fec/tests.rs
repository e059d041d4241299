// SPDX-License-Identifier: MIT
use super::*;
use crate::RtpBuilder;

const SSRC: u32 = 0xfeed;
const L: usize = 4;
const D: usize = 3;

/// Media packets of varying length, marker and timestamp.
fn media(seq: u16) -> Vec<u8> {
    let len = 100 + (usize::from(seq) * 37) % 200;
    let body: Vec<u8> = (0..len).map(|i| (i as u16 ^ seq.wrapping_mul(7)) as u8).collect();
    RtpBuilder::new(33, seq, u32::from(seq) * 3000, SSRC).marker(seq % 5 == 0).to_vec(&body)
}

/// Column FEC (one per column) and row FEC (one per row) of the matrix
/// starting at `base`.
fn matrix_fec(base: u16) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let pkts: Vec<Vec<u8>> = (0..(L * D) as u16).map(|i| media(base.wrapping_add(i))).collect();
    let cols = (0..L)
        .map(|c| {
            let group: Vec<&[u8]> = (0..D).map(|r| pkts[r * L + c].as_slice()).collect();
            encode(&group, Orientation::Column, L as u8, c as u16, 96, 0)
        })
        .collect();
    let rows = (0..D)
        .map(|r| {
            let group: Vec<&[u8]> = (0..L).map(|c| pkts[r * L + c].as_slice()).collect();
            encode(&group, Orientation::Row, 1, r as u16, 97, 0)
        })
        .collect();
    (cols, rows)
}

/// Feed the matrix at `base` minus `lost` (indices), then its FEC (rows
/// first when `rows_first`); return what was rebuilt.
fn run(base: u16, lost: &[usize], rows: bool, rows_first: bool) -> (FecDecoder, Vec<(u16, Vec<u8>)>) {
    let mut dec = FecDecoder::new(2048, 1_000);
    for i in 0..L * D {
        if !lost.contains(&i) {
            let seq = base.wrapping_add(i as u16);
            dec.on_media(seq, &media(seq));
        }
    }
    let (cols, rows_fec) = matrix_fec(base);
    let mut got = Vec::new();
    let mut order: Vec<&Vec<u8>> = cols.iter().collect();
    if rows {
        if rows_first {
            order = rows_fec.iter().chain(cols.iter()).collect();
        } else {
            order.extend(rows_fec.iter());
        }
    }
    for f in order {
        dec.on_fec(f, SSRC, 0, &mut |seq, p| got.push((seq, p.to_vec())));
    }
    (dec, got)
}

#[test]
fn one_loss_per_column_is_rebuilt_byte_for_byte() {
    // One in each of columns 1, 2 and 3 (the matrix's last packet is not
    // among them: nothing after it would show it lost).
    let (dec, got) = run(65_530, &[1, 6, 7], false, false);
    let mut seqs: Vec<u16> = got.iter().map(|(s, _)| *s).collect();
    seqs.sort_unstable();
    // Base 65530: indices 1, 6, 7 are 65531, 0 and 1 (across the wrap).
    assert_eq!(seqs, [0, 1, 65_531]);
    for (seq, p) in &got {
        assert_eq!(p, &media(*seq), "packet {seq} rebuilt exactly");
    }
    assert_eq!(got.len(), 3);
    let st = dec.stats();
    assert_eq!((st.recovered, st.columns, st.rows, st.l, st.d, st.unrecoverable), (3, 4, 0, 4, 3, 0));
}

#[test]
fn two_losses_in_a_column_need_the_rows() {
    // Indices 1 and 5 are both in column 1.
    let (dec, got) = run(100, &[1, 5], false, false);
    assert!(got.is_empty(), "column FEC alone cannot");
    let mut dec = dec;
    dec.tick(1_000);
    assert_eq!(dec.stats().unrecoverable, 1);
    let (dec, got) = run(100, &[1, 5], true, false);
    assert_eq!(got.len(), 2);
    for (seq, p) in &got {
        assert_eq!(p, &media(*seq));
    }
    assert_eq!(dec.stats().recovered, 2);
}

#[test]
fn two_dimensional_repair_goes_round() {
    // 0, 1 in row 0 and 4 in row 1 with 0 in column 0: columns first can
    // repair 1 (column 1 has one loss) then row 0 has one loss left (0)...
    let (dec, got) = run(200, &[0, 1, 4], true, true);
    assert_eq!(got.len(), 3, "{:?}", got.iter().map(|g| g.0).collect::<Vec<_>>());
    for (seq, p) in &got {
        assert_eq!(p, &media(*seq));
    }
    assert_eq!(dec.stats().recovered, 3);
}

#[test]
fn a_square_of_four_losses_is_beyond_2d_parity() {
    // Rows 0 and 1 each lose columns 0 and 1: every group has two missing.
    let (mut dec, got) = run(300, &[0, 1, 4, 5], true, false);
    assert!(got.is_empty());
    dec.tick(999);
    assert_eq!(dec.stats().unrecoverable, 0, "not expired yet");
    dec.tick(1_000);
    // Columns 0 and 1, rows 0 and 1 could not help.
    assert_eq!(dec.stats().unrecoverable, 4);
}

#[test]
fn fec_headers_are_checked() {
    let (cols, rows) = matrix_fec(0);
    let c = parse_fec(&cols[2]).unwrap();
    assert_eq!((c.orientation, c.sn_base, c.offset, c.na), (Orientation::Column, 2, 4, 3));
    assert_eq!(c.members().collect::<Vec<_>>(), [2, 6, 10]);
    let r = parse_fec(&rows[1]).unwrap();
    assert_eq!((r.orientation, r.sn_base, r.offset, r.na), (Orientation::Row, 4, 1, 4));
    let mut bad = cols[0].clone();
    bad[12 + 4] &= 0x7f; // E = 0
    assert_eq!(parse_fec(&bad), Err(FecError::Unsupported));
    let mut bad = cols[0].clone();
    bad[12 + 12] |= 0x08; // type 1
    assert_eq!(parse_fec(&bad), Err(FecError::Unsupported));
    assert_eq!(parse_fec(&cols[0][..20]), Err(FecError::TooShort));
    assert_eq!(parse_fec(&[1, 2, 3]), Err(FecError::NotRtp));
    let mut dec = FecDecoder::new(2048, 10);
    dec.on_fec(&[1, 2, 3], SSRC, 0, &mut |_, _| panic!("nothing to rebuild"));
    assert_eq!(dec.stats().malformed, 1);
}

#[test]
fn a_missing_packet_with_nothing_after_it_is_waited_for() {
    let mut dec = FecDecoder::new(2048, 1_000);
    let (_, rows) = matrix_fec(500);
    // Row 0 (500..=503) without its last packet, which may be on its way.
    for seq in 500..503u16 {
        dec.on_media(seq, &media(seq));
    }
    let mut got = Vec::new();
    dec.on_fec(&rows[0], SSRC, 0, &mut |s, p| got.push((s, p.to_vec())));
    assert!(got.is_empty() && dec.waiting());
    // It comes: nothing to rebuild, the FEC packet is done with.
    dec.on_media(503, &media(503));
    dec.retry(SSRC, &mut |s, p| got.push((s, p.to_vec())));
    assert!(got.is_empty() && !dec.waiting());
    assert_eq!(dec.stats().recovered, 0);
    // Lost for real: a later packet shows it.
    let (_, rows) = matrix_fec(600);
    for seq in [600u16, 601, 603, 604] {
        dec.on_media(seq, &media(seq));
    }
    dec.on_fec(&rows[0], SSRC, 0, &mut |s, p| got.push((s, p.to_vec())));
    assert_eq!(got, [(602, media(602))]);
}
