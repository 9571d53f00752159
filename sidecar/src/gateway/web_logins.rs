//! Web-app logins, for the audit trail. The router redeems a login link
//! and sets the app's cookie itself; every web-app request it sends on
//! carries a tag of that session (a hash of the cookie, which opens
//! nothing). The first request of a session is its login: one audit line,
//! at whichever router replica the user's requests arrive.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

/// How many sessions are remembered; the oldest is forgotten first (a
/// forgotten session's next request is written again: more, never less).
const REMEMBERED: usize = 4096;

/// The web-app sessions seen so far.
#[derive(Default)]
pub struct WebLogins {
    seen: Mutex<Seen>,
}

#[derive(Default)]
struct Seen {
    tags: HashSet<String>,
    order: VecDeque<String>,
}

impl WebLogins {
    /// Whether `tag` is a session not seen before (and now remembered).
    /// A tag that is not 1–64 hex digits is never a login.
    pub fn first_sight(&self, tag: &str) -> bool {
        if tag.is_empty() || tag.len() > 64 || !tag.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
        let mut seen = self.seen.lock().expect("the web-login set is never poisoned");
        if seen.tags.contains(tag) {
            return false;
        }
        if seen.order.len() == REMEMBERED
            && let Some(oldest) = seen.order.pop_front()
        {
            seen.tags.remove(&oldest);
        }
        seen.tags.insert(tag.to_owned());
        seen.order.push_back(tag.to_owned());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_a_login_once() {
        let logins = WebLogins::default();
        assert!(logins.first_sight("00ff"));
        assert!(!logins.first_sight("00ff"));
        assert!(logins.first_sight("00fe"));
    }

    #[test]
    fn tags_that_are_not_hex_are_no_login() {
        let logins = WebLogins::default();
        for tag in ["", "xyz", "00 ff", &"a".repeat(65), "user=\"root\""] {
            assert!(!logins.first_sight(tag), "{tag:?}");
        }
    }

    #[test]
    fn the_oldest_session_is_forgotten_when_full() {
        let logins = WebLogins::default();
        for n in 0..REMEMBERED {
            assert!(logins.first_sight(&format!("{n:x}")));
        }
        assert!(!logins.first_sight("0"));
        assert!(logins.first_sight("ffffffff"));
        // 0 was the oldest: forgotten, so written again.
        assert!(logins.first_sight("0"));
        assert!(!logins.first_sight(&format!("{:x}", REMEMBERED - 1)));
    }
}
