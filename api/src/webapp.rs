//! Web apps' names: a published port of a Container is served at
//! `https://{uid}-{port}.{domain}/`, under the router's wildcard domain.
//! The reconciler writes these URLs into status; the router reads the
//! Container and port back from a request's `Host`.

/// The URL of a web app: `https://{uid}-{port}.{domain}{path}` (a path
/// without a leading `/` gets one).
pub fn url(domain: &str, uid: &str, port: u16, path: &str) -> String {
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    format!("https://{uid}-{port}.{domain}{path}")
}

/// The Container UID and port of `host` if it is `{uid}-{port}.{domain}`
/// (`domain`'s own port, if any, is not part of a host: the router may be
/// reached on a NodePort, `apps.example:30443`). The port is written one
/// way only (`80`, never `080` or `+80`): one host per web app.
pub fn parse_host(domain: &str, host: &str) -> Option<(String, u16)> {
    let domain = domain.rsplit_once(':').map_or(domain, |(host, _)| host);
    let label = host.strip_suffix(domain)?.strip_suffix('.')?;
    if label.contains('.') {
        return None;
    }
    let (uid, port) = label.rsplit_once('-')?;
    if port.starts_with('0') || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port = port.parse::<u16>().ok().filter(|p| *p > 0)?;
    if uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return None;
    }
    Some((uid.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_back_to_their_container_and_port() {
        let uid = "7c1e9a52-5b7e-4f0e-9d3a-2b8f6c4d1e90";
        let app = url("apps.example:30443", uid, 8080, "lab?x=1");
        assert_eq!(app, format!("https://{uid}-8080.apps.example:30443/lab?x=1"));
        assert_eq!(
            parse_host("apps.example:30443", &format!("{uid}-8080.apps.example")),
            Some((uid.to_owned(), 8080))
        );
        for bad in [
            "apps.example",
            "x.apps.example",
            "a.b-80.apps.example",
            "abc-0.apps.example",
            "abc-99999.apps.example",
            "zz-80.apps.example",
            "-80.apps.example",
            "abc-80.apps.example.evil",
        ] {
            assert_eq!(parse_host("apps.example", bad), None, "{bad}");
        }
    }

    /// Found by the `router_request` fuzz target: `abcdef-043` was port 43,
    /// a second host (another origin) for the same web app.
    #[test]
    fn a_port_is_written_one_way_only() {
        for bad in [
            "abcdef-043.apps.example",
            "abcdef-+43.apps.example",
            "abcdef-00.apps.example",
        ] {
            assert_eq!(parse_host("apps.example", bad), None, "{bad}");
        }
        assert_eq!(
            parse_host("apps.example", "abcdef-43.apps.example"),
            Some(("abcdef".to_owned(), 43))
        );
    }

    proptest::proptest! {
        #[test]
        fn hosts_parse_to_a_hex_uid_and_a_port_or_nothing(host in "\\PC{0,80}") {
            if let Some((uid, port)) = parse_host("apps.example:30443", &host) {
                proptest::prop_assert!(port > 0 && !uid.is_empty());
                proptest::prop_assert!(uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
                proptest::prop_assert_eq!(host, format!("{uid}-{port}.apps.example"));
            }
        }
    }
}
