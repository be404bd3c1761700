//! What comes back from the Redis tier: RESP replies, sealed
//! values and purge messages, and the purge request's form from clients.
//! Arbitrary bytes never panic; a parsed reply stream is consistent with
//! its prefix; nothing opens without the key it was sealed with.
//!
//! Input: the bytes, as replies, as a sealed value, as a purge message and
//! as a purge form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ngx_http_auth_oauth2_token_module::oauth::purge::{token_of_form, MAX_TOKEN_BYTES};
use ngx_http_auth_oauth2_token_module::redis::fleet::{self, FleetKey, FleetKeys};
use ngx_http_auth_oauth2_token_module::redis::resp::{self, Parsed};

fuzz_target!(|data: &[u8]| {
    for count in 1..=3 {
        match resp::parse(data, count) {
            Parsed::Done { replies, used } => {
                assert_eq!(replies.len(), count);
                assert!(used <= data.len());
                // The same replies from exactly the bytes they took.
                assert_eq!(
                    resp::parse(&data[..used], count),
                    Parsed::Done { replies: replies.clone(), used }
                );
                for reply in &replies {
                    let _ = resp::pubsub_message(reply);
                    if let resp::Reply::Error(text) = reply {
                        let kind = resp::error_kind(text);
                        assert!(kind.len() <= 16 && kind.bytes().all(|b| b.is_ascii_uppercase()));
                    }
                }
            }
            Parsed::Incomplete => {
                // Fewer bytes can never be complete.
                if !data.is_empty() {
                    assert_ne!(
                        std::mem::discriminant(&resp::parse(&data[..data.len() - 1], count)),
                        std::mem::discriminant(&Parsed::Done { replies: vec![], used: 0 })
                    );
                }
            }
            Parsed::Garbage => {}
        }
    }

    let key = FleetKey::from_secret(&[7; 32]).expect("a long secret");
    assert_eq!(fleet::open_entry(&key, b"slot", b"field", data), None);
    let keys = FleetKeys { current: key, old: None };
    assert_eq!(fleet::open_purge(&keys, b"oauth2:purge", data), None);

    if let Ok(token) = token_of_form(data) {
        assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES);
    }
});
