#![no_main]
//! `ext4::fuzzing::xattr`: see guests/ext4/src/fuzzing.rs for what the bytes are.

libfuzzer_sys::fuzz_target!(|data: &[u8]| ext4::fuzzing::xattr(data));
