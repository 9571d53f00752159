//! What the fuzz targets share: their input format, and [`Pieces`], a
//! stream handing out the bytes of a wire-format input in reads of a
//! chosen size.
//!
//! A target's input is its fields one after another, each ended by a byte
//! `0xff` (which never occurs in UTF-8), so a seed is written by hand:
//! `printf 'GET\xff/v1/namespaces/ns/containers/web-1/ssh\xff'`. A field
//! is read as text (invalid UTF-8 replaced), a number, a flag (`1`) or a
//! header block (`Name: value` lines). Missing fields are empty.

use http::{HeaderMap, HeaderName, HeaderValue};

/// The byte that ends a field.
pub const END: u8 = 0xff;

/// An input's fields, read in order.
pub struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    /// The next field's bytes.
    pub fn bytes(&mut self) -> &'a [u8] {
        match self.rest.iter().position(|b| *b == END) {
            Some(end) => {
                let field = &self.rest[..end];
                self.rest = &self.rest[end + 1..];
                field
            }
            None => std::mem::take(&mut self.rest),
        }
    }

    /// The next field as text.
    pub fn text(&mut self) -> String {
        String::from_utf8_lossy(self.bytes()).into_owned()
    }

    /// The next field as text, or `None` when it is absent (no bytes left).
    pub fn optional_text(&mut self) -> Option<String> {
        (!self.rest.is_empty()).then(|| self.text())
    }

    /// The next field as a decimal number (0 when it is not one).
    pub fn number<T: std::str::FromStr + Default>(&mut self) -> T {
        self.text().trim().parse().unwrap_or_default()
    }

    /// The next field as a flag: `1` is true.
    pub fn flag(&mut self) -> bool {
        self.bytes() == b"1"
    }

    /// The next field as headers, one `Name: value` a line (lines that are
    /// not a valid header are left out; a name may repeat).
    pub fn headers(&mut self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for line in self.bytes().split(|b| *b == b'\n') {
            let Some(colon) = line.iter().position(|b| *b == b':') else {
                continue;
            };
            let value = line[colon + 1..].trim_ascii();
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(&line[..colon]),
                HeaderValue::from_bytes(value),
            ) {
                map.append(name, value);
            }
        }
        map
    }

    /// Every field left, as text.
    pub fn rest(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while !self.rest.is_empty() {
            out.push(self.text());
        }
        out
    }
}

/// A stream over `rest` that hands out at most `piece` bytes per read (the
/// same bytes as a peer's writes would arrive, split anywhere). Never
/// waits.
pub struct Pieces<'a> {
    pub rest: &'a [u8],
    pub piece: usize,
}

impl tokio::io::AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let n = self.rest.len().min(self.piece).min(buf.remaining());
        let (now, later) = self.rest.split_at(n);
        buf.put_slice(now);
        self.rest = later;
        std::task::Poll::Ready(Ok(()))
    }
}
