//! The `.npy` header parser on raw bytes (the whole input is the file).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = calibscope_fuzz::limits();
    if let Ok((info, trailing)) = calibscope::source::parse_header(data, &limits) {
        // A header that passes must describe data that fits in the input.
        let bytes = info.len() as u64 * info.dtype.size() as u64;
        assert!(bytes + trailing <= data.len() as u64);
    }
});
