//! Property tests of the parsers an attacker reaches through the API
//! crate: every input gives a refusal or a canonical value, never a panic.

use hatchway_api::control;
use hatchway_api::proof;
use hatchway_api::webdav::{Target, check_depth, parse_range};
use proptest::prelude::*;

proptest! {
    #[test]
    fn ranges_are_refused_or_inside_the_file(value in "\\PC{0,40}", size in 0u64..1 << 40) {
        if let Ok(Some((start, end))) = parse_range(&value, size) {
            prop_assert!(start <= end && end < size, "{value:?} over {size}: {start}-{end}");
        }
    }

    #[test]
    fn range_shaped_inputs_are_refused_or_inside_the_file(
        start in proptest::option::of(any::<u64>()),
        end in proptest::option::of(any::<u64>()),
        size in any::<u64>(),
    ) {
        let value = format!(
            "bytes={}-{}",
            start.map(|s| s.to_string()).unwrap_or_default(),
            end.map(|e| e.to_string()).unwrap_or_default()
        );
        if let Ok(Some((s, e))) = parse_range(&value, size) {
            prop_assert!(s <= e && e < size, "{value:?} over {size}: {s}-{e}");
        }
    }

    #[test]
    fn webdav_paths_name_the_root_or_one_plain_file(rest in "(/?sessions/?)?\\PC{0,60}") {
        match Target::parse(&rest) {
            Ok(Target::File(name) | Target::Recording(name)) => {
                prop_assert!(!name.is_empty() && !name.contains(['/', '\0']) && !name.starts_with('.'), "{name:?}");
            }
            Ok(Target::Root | Target::Recordings) | Err(_) => {}
        }
    }

    #[test]
    fn encoded_traversals_never_resolve(segments in proptest::collection::vec("(\\.\\.|\\.|%2[eEfF]|%2e%2e|/|[a-z]{1,3}|%00|sessions)", 1..8)) {
        let rest = format!("/{}", segments.concat());
        if let Ok(Target::File(name) | Target::Recording(name)) = Target::parse(&rest) {
            prop_assert!(!name.contains('/') && !name.starts_with('.') && !name.contains('\0'), "{rest:?} -> {name:?}");
        }
    }

    #[test]
    fn depth_is_one_of_three_values(depth in "\\PC{0,12}") {
        if let Ok(d) = check_depth(Some(&depth)) {
            prop_assert!(["0", "1", "infinity"].contains(&d));
        }
    }

    #[test]
    fn control_frames_decode_or_refuse(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = control::decode(&body);
    }

    #[test]
    fn json_control_frames_decode_or_refuse(kind in "[a-z_]{0,12}", v in 0u32..4, extra in "\\PC{0,30}") {
        let body = format!(r#"{{"v":{v},"type":"{kind}","x":{extra:?}}}"#);
        let _ = control::decode(body.as_bytes());
    }

    #[test]
    fn control_lengths_over_the_limit_are_refused(header in any::<[u8; 4]>()) {
        let len = u32::from_be_bytes(header) as usize;
        prop_assert_eq!(control::body_len(header).is_ok(), len <= control::MAX_MESSAGE_BYTES);
    }

    #[test]
    fn a_proof_header_is_accepted_only_when_it_is_the_proof(presented in "\\PC{0,80}", cert in proptest::collection::vec(any::<u8>(), 0..64)) {
        let key = proof::ctr_key(b"a root secret of thirty-two bytes", "uid");
        let expected = proof::request_auth(&key, &cert);
        prop_assert_eq!(proof::verify_request_auth(&key, &cert, &presented), presented == expected);
        prop_assert!(proof::verify_request_auth(&key, &cert, &expected));
    }
}
