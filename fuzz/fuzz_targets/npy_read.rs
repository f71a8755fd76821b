//! The full `.npy` reader: header, size checks and chunked decoding of every element.
#![no_main]

use calibscope::source::Location;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = calibscope_fuzz::scratch("npy");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    calibscope_fuzz::read_all(&Location::Npy(path), &calibscope_fuzz::limits());
});
