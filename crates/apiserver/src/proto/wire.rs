//! The protobuf wire format: varints, keys, length-delimited and fixed fields.

use super::ProtoError;

/// Wire type of a varint field.
pub const VARINT: u8 = 0;
/// Wire type of a 64-bit fixed field (doubles).
pub const FIXED64: u8 = 1;
/// Wire type of a length-delimited field (strings, bytes, messages, packed).
pub const LEN: u8 = 2;
/// Wire type of a 32-bit fixed field.
pub const FIXED32: u8 = 5;

/// Reads fields from one encoded message.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// True when every byte was read.
    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Reads a base-128 varint.
    pub fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or(ProtoError::Truncated)?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(ProtoError::Malformed("varint longer than 10 bytes"))
    }

    /// Reads a field key: (field number, wire type).
    pub fn key(&mut self) -> Result<(u32, u8), ProtoError> {
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| ProtoError::Malformed("field number"))?;
        if tag == 0 {
            return Err(ProtoError::Malformed("field number 0"));
        }
        Ok((tag, (key & 7) as u8))
    }

    /// Reads a length-delimited field's bytes.
    pub fn bytes(&mut self) -> Result<&'a [u8], ProtoError> {
        let len = usize::try_from(self.varint()?).map_err(|_| ProtoError::Truncated)?;
        let end = self.pos.checked_add(len).ok_or(ProtoError::Truncated)?;
        let out = self.buf.get(self.pos..end).ok_or(ProtoError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    /// Reads `n` raw bytes.
    pub fn fixed(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self.pos.checked_add(n).ok_or(ProtoError::Truncated)?;
        let out = self.buf.get(self.pos..end).ok_or(ProtoError::Truncated)?;
        self.pos = end;
        Ok(out)
    }

    /// Skips a field of the given wire type.
    pub fn skip(&mut self, wire: u8) -> Result<(), ProtoError> {
        match wire {
            VARINT => self.varint().map(drop),
            FIXED64 => self.fixed(8).map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => self.fixed(4).map(drop),
            _ => Err(ProtoError::Malformed("unsupported wire type")),
        }
    }
}

/// Appends fields to an encoded message.
#[derive(Default)]
pub struct Writer {
    /// The bytes written so far.
    pub buf: Vec<u8>,
}

impl Writer {
    /// Appends a varint.
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    /// Appends a field key.
    pub fn key(&mut self, tag: u32, wire: u8) {
        self.varint(u64::from(tag) << 3 | u64::from(wire));
    }

    /// Appends a length-delimited field.
    pub fn bytes(&mut self, tag: u32, data: &[u8]) {
        self.key(tag, LEN);
        self.varint(data.len() as u64);
        self.buf.extend_from_slice(data);
    }

    /// Appends a double.
    pub fn double(&mut self, tag: u32, v: f64) {
        self.key(tag, FIXED64);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [0u64, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut w = Writer::default();
            w.varint(v);
            assert_eq!(Reader::new(&w.buf).varint().ok(), Some(v));
        }
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        assert!(Reader::new(&[0x80]).varint().is_err());
        assert!(Reader::new(&[0x0a, 0x05, 1]).key().is_ok());
        let mut r = Reader::new(&[0x0a, 0x05, 1]);
        let _ = r.key();
        assert!(r.bytes().is_err());
        assert!(Reader::new(&[0xff; 11]).varint().is_err());
        assert!(Reader::new(&[0x00]).key().is_err());
    }
}
