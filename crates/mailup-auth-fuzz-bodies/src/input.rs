//! Reading structured values out of fuzz bytes (a tiny `arbitrary`), and writing them back for
//! seeds. Every read succeeds: past the end, numbers are 0 and byte strings are empty, so any
//! input is a valid case.

/// A cursor over fuzz input.
#[derive(Debug)]
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// One byte (0 past the end).
    pub fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((first, rest)) => {
                self.data = rest;
                *first
            }
            None => 0,
        }
    }

    /// A big-endian `u16`.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.byte(), self.byte()])
    }

    /// A byte string prefixed by its length (one byte, so at most 255).
    pub fn short_bytes(&mut self) -> &'a [u8] {
        let len = usize::from(self.byte()).min(self.data.len());
        let (head, rest) = self.data.split_at(len);
        self.data = rest;
        head
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Builds inputs that [`Reader`] reads back: for seeds.
#[derive(Debug, Default)]
pub struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// An empty input.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one byte.
    pub fn byte(mut self, b: u8) -> Self {
        self.out.push(b);
        self
    }

    /// Appends a big-endian `u16`.
    pub fn u16(mut self, v: u16) -> Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a length-prefixed byte string (truncated to 255 bytes).
    pub fn short_bytes(mut self, bytes: &[u8]) -> Self {
        let bytes = &bytes[..bytes.len().min(255)];
        self.out.push(bytes.len() as u8);
        self.out.extend_from_slice(bytes);
        self
    }

    /// Appends raw bytes (the rest).
    pub fn rest(mut self, bytes: &[u8]) -> Self {
        self.out.extend_from_slice(bytes);
        self
    }

    /// The input.
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}
