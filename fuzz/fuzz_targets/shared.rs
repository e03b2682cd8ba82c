//! The code each fuzz target runs on one input. Shared with the stable
//! regression test (tests/fuzz_regressions.rs includes this file), so a
//! crashing input saved under tests/fuzz_inputs/<target>/ replays exactly
//! what the fuzzer ran.
#![allow(dead_code)]

use kubectl_mapguard::gobin::GoBinary;
use kubectl_mapguard::protocol::Line;

/// Arbitrary bytes as a Go executable: `GoBinary::from_bytes` and, when it
/// accepts them, every accessor. gobin parses untrusted files, so nothing
/// here may panic, overflow or allocate without bound.
pub fn gobin(data: &[u8]) {
    let Ok(bin) = GoBinary::from_bytes("fuzz", data.to_vec()) else {
        return;
    };
    let _ = bin.go_version();
    let _ = bin.experiments();
    let _ = bin.map_impl();
    let _ = bin.pie();
    let _ = bin.stripped();
    let _ = bin.symbol_source();
    let _ = bin.goid_offset();
    let _ = bin.goid_source();
    let _ = bin.g_m_offset();
    for p in bin.probe_points() {
        let _ = bin.symbolize(p.addr);
        let _ = bin.symbolize_inline(p.addr);
        let _ = bin.return_points(&p.func);
        let _ = bin.file_offset(p.addr);
    }
    let _ = bin.function_addr("runtime.mapdelete");
    let _ = bin.probe_point_for("runtime.fatal");
    let _ = bin.return_points("runtime.fatal");
    if let Some(w) = bin.wrappers() {
        let _ = w.holds_return(w.lo.wrapping_add(40));
    }
    let (vaddr, _) = bin.exec_bias_base();
    let _ = bin.caller_at(vaddr.wrapping_add(8));
    let _ = bin.symbolize(vaddr);
    let _ = bin.symbolize_inline(vaddr.wrapping_add(1));
    let _ = bin.file_offset(vaddr);

    // Type addresses derived from the input, so the fuzzer can steer them:
    // types_base plus small offsets taken from the last bytes, the last word
    // itself, and a few edges.
    let tail = |i: usize| {
        data.len()
            .checked_sub(i)
            .map_or(0, |at| u64::from(data[at]))
    };
    let mut addrs = vec![0, u64::MAX, vaddr, vaddr.wrapping_sub(1)];
    if let Some(base) = bin.types_base() {
        addrs.extend([
            base,
            base.wrapping_add(8),
            base.wrapping_sub(8),
            base.wrapping_add(tail(1) * 8 + tail(2) * 2048),
        ]);
    }
    if let Some(last) = data.len().checked_sub(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(&data[last..]);
        addrs.push(u64::from_le_bytes(word));
    }
    for a in addrs {
        let _ = bin.map_type_name(a);
        let _ = bin.map_key_info(a);
    }
}

/// Arbitrary text as one protocol line: `Line::from_json` must not panic,
/// and whatever it accepts must survive `to_json` -> `from_json` unchanged.
/// Input that is not UTF-8 is skipped (lines are read as text).
pub fn json_lines(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(line) = Line::from_json(s) else {
        return;
    };
    let wire = line.to_json();
    let again = Line::from_json(&wire).unwrap_or_else(|e| {
        panic!("to_json wrote a line from_json refuses: {e}\nin:  {s}\nout: {wire}")
    });
    assert_eq!(
        again, line,
        "round trip changed the line\nin:  {s}\nout: {wire}"
    );
}
