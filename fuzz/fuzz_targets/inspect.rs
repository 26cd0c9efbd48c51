//! Fuzzes the body inspector and the link masking with arbitrary factory
//! answers: no input may panic, and a masked body never holds a followable
//! report link's apiKey or fix code in clear.
#![no_main]

use bytes::Bytes;
use factory_sidecar::chaos::inspect::inspect;
use factory_sidecar::chaos::link::ReportLink;
use factory_sidecar::chaos::mask::redact;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(found) = inspect(data) else { return };
    let _ = found.jwt();
    let links: Vec<ReportLink> = found.links().filter_map(ReportLink::parse).collect();
    if links.is_empty() {
        return;
    }
    let masked = redact(&Bytes::copy_from_slice(data));
    let text = String::from_utf8_lossy(&masked);
    for link in links {
        // "/api/support/<key>/report/<code>"
        let parts: Vec<&str> = link.path().split('/').collect();
        for secret in [parts.get(3), parts.get(5)].into_iter().flatten() {
            // Short values can occur elsewhere in a body by chance.
            assert!(secret.len() < 8 || !text.contains(secret), "secret left in a masked body");
        }
    }
});
