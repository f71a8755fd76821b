//! The `.npz` reader: archive listing (discovery), member headers, stored and deflated data.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = calibscope_fuzz::scratch("npz");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    calibscope_fuzz::discover_and_read(&path, &calibscope_fuzz::limits());
});
