//! `sniff` on arbitrary bytes: it must never panic, a hello may only claim bytes
//! that are there, and once a prefix is decided, longer inputs agree.
#![no_main]

use frametap_proto::tls_hello::{Sniff, sniff};

/// Prefixes up to this length are sniffed as well, as the agent does while the
/// first bytes trickle in.
const MAX_PREFIX: usize = 512;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let whole = sniff(data);
    if let Sniff::Hello(hello) = &whole {
        assert!(hello.hello_len <= data.len());
    }
    for end in 0..=data.len().min(MAX_PREFIX) {
        let prefix = &data[..end];
        let answer = sniff(prefix);
        if let Sniff::Hello(hello) = &answer {
            assert!(hello.hello_len <= prefix.len());
        }
        if answer != Sniff::NeedMore {
            assert_eq!(
                answer, whole,
                "a decided prefix of {end} bytes changed its answer"
            );
        }
    }
});
